//! The `pleas` command-line tool.

fn main() {
    return_large_buffers_to_the_system();
    let code = pleas::cli::run(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    std::process::exit(code);
}

/// Makes glibc's allocator map every buffer of 1 MiB or more on its own, so that freeing it
/// gives its pages back at once. By default glibc raises that threshold (up to 32 MiB) as
/// large buffers are freed and then serves them from its heaps, where freed pages stay
/// resident: a merge's peak RSS then depended on how the two threads' multi-megabyte
/// activation buffers interleaved (286-478 MB for one merge whose live peak was ~250 MB).
/// The merge reuses its large buffers, so the extra mappings cost little.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_large_buffers_to_the_system() {
    // SAFETY: `mallopt` only sets an allocator parameter; it is called before any thread
    // starts. A failure (0) leaves glibc's default, which is correct, only less frugal.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_buffers_to_the_system() {}

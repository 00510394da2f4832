//! The `pleas` command line (a thin wrapper over [`pleas::cli::run`]).

fn main() {
    let code = pleas::cli::run(
        std::env::args_os(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    std::process::exit(code);
}

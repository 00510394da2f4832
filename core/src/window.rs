//! Sliding-window arithmetic shared by the layer graph and the kernels (convolutions and
//! pooling): the height/width [`Pair`] and the output size of a window along one axis.

/// Height/width pair (kernel size, stride or padding).
pub type Pair = [usize; 2];

/// Output size of a sliding window along one axis, or `None` if it does not fit.
pub fn window_out(size: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    if kernel == 0 || stride == 0 {
        return None;
    }
    let padded = size.checked_add(padding.checked_mul(2)?)?;
    if padded < kernel {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

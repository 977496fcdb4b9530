//! What the crate's own unit tests share.

/// The size of the future a two-argument async function returns: such a
/// future is allocated and moved whole, so its size is paid on every call.
pub(crate) fn future_size<A, B, F: std::future::Future>(_: fn(A, B) -> F) -> usize {
    std::mem::size_of::<F>()
}

//! Requests to a task that serves them in batches (the state store's
//! writer and reader, the embedded queue's writer).

/// Queues a request for a task that serves them one batch at a time, and
/// waits for its answer. A full queue is refused at once with `busy`, never
/// waited on; a task that stopped answers `stopped`.
pub(crate) async fn ask<R, T, E>(
    queue: &tokio::sync::mpsc::Sender<R>,
    request: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, E>>) -> R,
    busy: E,
    stopped: impl Fn() -> E,
) -> Result<T, E> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    queue
        .try_send(request(reply))
        .map_err(|error| match error {
            tokio::sync::mpsc::error::TrySendError::Full(_) => busy,
            tokio::sync::mpsc::error::TrySendError::Closed(_) => stopped(),
        })?;
    answer.await.unwrap_or_else(|_| Err(stopped()))
}

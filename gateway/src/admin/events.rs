//! `GET /api/v1/events`: the catalog's change feed as Server-Sent Events.
//!
//! Each event's id is `EPOCH-REVISION`, where EPOCH identifies this gateway
//! process. A client that reconnects with `Last-Event-ID` gets every change
//! it missed, in order, then the live feed. When that is no longer possible
//! — the id is from another process, or older than the replay buffer, or the
//! client fell behind — it gets a `reset` event: re-read the directory, then
//! follow on from the reset's id.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use capgate_catalog::Catalog;
use capgate_catalog::changes::{Change, Resumed};
use futures_util::stream::{self, Stream, StreamExt};
use http::HeaderMap;
use serde_json::json;
use tokio::sync::broadcast;

use super::AdminState;

fn event_id(epoch: u64, revision: u64) -> String {
    format!("{epoch}-{revision}")
}

fn change_event(epoch: u64, change: &Change) -> Event {
    Event::default()
        .id(event_id(epoch, change.revision))
        .event(
            serde_json::to_value(change.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        )
        .data(serde_json::to_string(change).unwrap_or_default())
}

fn marker(name: &str, epoch: u64, revision: u64) -> Event {
    Event::default()
        .id(event_id(epoch, revision))
        .event(name)
        .data(json!({ "revision": revision }).to_string())
}

/// Where the client wants to resume: `Some(revision)` for an id of this
/// process, `Err(())` for an id it cannot use.
fn resume_point(headers: &HeaderMap, epoch: u64) -> Option<Result<u64, ()>> {
    let text = headers.get("last-event-id")?.to_str().ok()?;
    Some(
        text.split_once('-')
            .and_then(|(e, r)| Some((e.parse::<u64>().ok()?, r.parse::<u64>().ok()?)))
            .filter(|(e, _)| *e == epoch)
            .map(|(_, revision)| revision)
            .ok_or(()),
    )
}

pub async fn stream(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let epoch = state.epoch;
    let catalog = &state.catalog;
    // `ready` (a fresh subscriber) or `reset` (resume impossible) first, then
    // replayed changes, then live ones.
    let (first, resumed) = match resume_point(&headers, epoch) {
        None => {
            let now = catalog.revision();
            (
                Some(marker("ready", epoch, now)),
                resume_or_follow(catalog, now),
            )
        }
        Some(Ok(after)) => match catalog.resume(after) {
            Ok(resumed) => (None, resumed),
            Err(gap) => reset(catalog, epoch, gap.revision),
        },
        Some(Err(())) => reset(catalog, epoch, catalog.revision()),
    };
    let Resumed { missed, receiver } = resumed;
    let replayed = stream::iter(
        first.into_iter().chain(
            missed
                .into_iter()
                .map(move |change| change_event(epoch, &change)),
        ),
    );
    let events = replayed
        .chain(live_events(receiver, state.clone()))
        .map(Ok::<_, Infallible>)
        .take_until(state.shutdown.clone().cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn reset(catalog: &Catalog, epoch: u64, revision: u64) -> (Option<Event>, Resumed) {
    (
        Some(marker("reset", epoch, revision)),
        resume_or_follow(catalog, revision),
    )
}

/// Resumes after `revision`; if even that is impossible (the feed moved on
/// in between), follows from now.
fn resume_or_follow(catalog: &Catalog, revision: u64) -> Resumed {
    catalog.resume(revision).unwrap_or_else(|_| Resumed {
        missed: Vec::new(),
        receiver: catalog.subscribe(),
    })
}

/// The live feed; a subscriber that falls behind gets a `reset`.
fn live_events(
    receiver: broadcast::Receiver<Arc<Change>>,
    state: Arc<AdminState>,
) -> impl Stream<Item = Event> {
    stream::unfold(receiver, move |mut receiver| {
        let state = state.clone();
        async move {
            match receiver.recv().await {
                Ok(change) => Some((change_event(state.epoch, &change), receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let revision = state.catalog.revision();
                    let receiver = state.catalog.subscribe();
                    Some((marker("reset", state.epoch, revision), receiver))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        }
    })
}

//! The legacy protocol's sessions (2025-06-18, 2025-11-25).
//!
//! rmcp serves each session with its own service loop, whose channels cost
//! about 60 KiB whether or not the client ever comes back. capgate keeps
//! every open session's `initialize` parameters here (rmcp's
//! [`SessionStore`]) and lets a session with nothing in flight leave memory
//! once it has been quiet for a while: rmcp restores it from
//! this directory, transparently, on its next request
//! (`mcp_session_resident_ms`, 10 s by default). A session with a
//! request or a stream open (a GET stream waiting for `list_changed`, a call
//! in progress) stays resident.
//!
//! This directory is also what `max_mcp_sessions` counts and what
//! `mcp_session_idle_ms` expires: a session is open from its `initialize`
//! until `DELETE`, or until it has been idle, with nothing open, that long.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};
use tokio_util::sync::CancellationToken;

/// How often sessions are checked for hibernation and expiry.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Entry {
    state: SessionState,
    /// Requests and streams of this session still being answered.
    open: usize,
    /// When the last one began or ended.
    last_active: Instant,
    /// Whether rmcp may hold it in memory (it restores on demand).
    resident: bool,
    /// The agent that opened it ([`Sessions::bind`]); only that agent's
    /// requests may use it.
    owner: Option<Arc<str>>,
}

/// Every open legacy session, resident in rmcp or not.
pub struct Sessions {
    entries: Mutex<HashMap<Arc<str>, Entry>>,
    /// `initialize`s admitted and not yet answered.
    opening: AtomicUsize,
    /// rmcp's live sessions.
    pub rmcp: Arc<LocalSessionManager>,
    idle_expiry: Duration,
    hibernate_after: Duration,
}

impl Sessions {
    /// Sessions that expire after `idle_expiry` quiet and leave memory after
    /// `hibernate_after`.
    pub fn new(idle_expiry: Duration, hibernate_after: Duration) -> Arc<Self> {
        let mut rmcp = LocalSessionManager::default();
        // Expiry is decided here, where open streams are known: rmcp's own
        // idle timer would end a session whose GET stream is waiting.
        rmcp.session_config.keep_alive = None;
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            opening: AtomicUsize::new(0),
            rmcp: Arc::new(rmcp),
            idle_expiry,
            hibernate_after,
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open sessions, resident or not.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits one more `initialize` when fewer than `limit` sessions are
    /// open or opening; otherwise says how many are.
    pub fn reserve(self: &Arc<Self>, limit: usize) -> Result<Opening, usize> {
        let entries = self.entries();
        let open = entries.len() + self.opening.load(Ordering::SeqCst);
        if open >= limit {
            return Err(open);
        }
        self.opening.fetch_add(1, Ordering::SeqCst);
        Ok(Opening {
            sessions: self.clone(),
        })
    }

    /// Sessions rmcp holds in memory now.
    pub async fn resident(&self) -> usize {
        self.rmcp.sessions.read().await.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.entries().contains_key(id)
    }

    /// Binds session `id` to the agent that opened it (`owner`: its tenant
    /// and name), as MCP's security guidance asks: a session id another
    /// agent learns gives it nothing.
    pub fn bind(&self, id: &str, owner: Arc<str>) {
        if let Some(entry) = self.entries().get_mut(id) {
            entry.owner = Some(owner);
        }
    }

    /// Whether `agent` may use session `id`: false only when the session is
    /// open and bound to another agent (an unknown one is answered 404 as
    /// it always is).
    pub fn usable_by(&self, id: &str, agent: &str) -> bool {
        self.entries()
            .get(id)
            .and_then(|entry| entry.owner.as_deref())
            .is_none_or(|owner| owner == agent)
    }

    /// A request of session `id` begins; the returned guard ends it. None
    /// for a session that is not open (rmcp answers it 404).
    pub fn begin(self: &Arc<Self>, id: &str) -> Option<Activity> {
        let mut entries = self.entries();
        let key = entries.get_key_value(id)?.0.clone();
        if let Some(entry) = entries.get_mut(&key) {
            entry.open += 1;
            entry.last_active = Instant::now();
            entry.resident = true;
        }
        Some(Activity {
            sessions: self.clone(),
            id: key,
        })
    }

    fn end(&self, id: &str) {
        if let Some(entry) = self.entries().get_mut(id) {
            entry.open = entry.open.saturating_sub(1);
            entry.last_active = Instant::now();
        }
    }

    /// Ends a session that rmcp does not hold (`DELETE` of a hibernated
    /// one). False when it is resident: rmcp must end it.
    pub fn end_hibernated(&self, id: &str) -> bool {
        let mut entries = self.entries();
        match entries.get(id) {
            Some(entry) if !entry.resident => {
                entries.remove(id);
                true
            }
            _ => false,
        }
    }

    /// Hibernates quiet sessions and expires idle ones, until `stop`.
    pub async fn sweep_until(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.sweep(Instant::now()).await,
            }
        }
    }

    async fn sweep(&self, now: Instant) {
        let mut leave_memory: Vec<Arc<str>> = Vec::new();
        {
            let mut entries = self.entries();
            entries.retain(|id, entry| {
                if entry.open > 0 {
                    return true;
                }
                let quiet = now.saturating_duration_since(entry.last_active);
                if quiet >= self.idle_expiry {
                    if entry.resident {
                        leave_memory.push(id.clone());
                    }
                    tracing::debug!(session = %id, "MCP session expired");
                    return false;
                }
                if entry.resident && quiet >= self.hibernate_after {
                    entry.resident = false;
                    leave_memory.push(id.clone());
                }
                true
            });
        }
        for id in leave_memory {
            // A request may have arrived since: it keeps the session.
            if self
                .entries()
                .get(&id)
                .is_some_and(|entry| entry.resident || entry.open > 0)
            {
                continue;
            }
            if let Err(error) = self.rmcp.close_session(&id).await {
                tracing::warn!(session = %id, %error, "could not close an MCP session");
            }
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for Sessions {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        Ok(self
            .entries()
            .get(session_id)
            .map(|entry| entry.state.clone()))
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let mut entries = self.entries();
        // Stored again, a session keeps the agent it is bound to.
        let owner = entries
            .get(session_id)
            .and_then(|entry| entry.owner.clone());
        entries.insert(
            Arc::from(session_id),
            Entry {
                state: state.clone(),
                open: 0,
                last_active: Instant::now(),
                resident: true,
                owner,
            },
        );
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.entries().remove(session_id);
        Ok(())
    }
}

/// An admitted `initialize`, until it is answered.
pub struct Opening {
    sessions: Arc<Sessions>,
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.sessions.opening.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One request (or stream) of a session, until its response body is done
/// or dropped.
pub struct Activity {
    sessions: Arc<Sessions>,
    id: Arc<str>,
}

impl Drop for Activity {
    fn drop(&mut self) {
        self.sessions.end(&self.id);
    }
}

/// A response body that holds its session's [`Activity`] until it is
/// finished or dropped (the client went away).
pub struct ActiveBody {
    inner: Body,
    _activity: Activity,
}

impl ActiveBody {
    pub fn wrap(inner: Body, activity: Activity) -> Body {
        Body::new(Self {
            inner,
            _activity: activity,
        })
    }
}

impl HttpBody for ActiveBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{ClientCapabilities, Implementation, InitializeRequestParams};

    fn state() -> SessionState {
        SessionState::new(InitializeRequestParams::new(
            ClientCapabilities::default(),
            Implementation::new("probe", "0"),
        ))
    }

    #[tokio::test]
    async fn quiet_sessions_leave_memory_open_ones_stay_and_idle_ones_expire() {
        let sessions = Sessions::new(Duration::from_secs(300), Duration::from_secs(10));
        sessions.store("quiet", &state()).await.unwrap();
        sessions.store("busy", &state()).await.unwrap();
        let stream = sessions.begin("busy").expect("busy is open");
        assert!(sessions.begin("never-opened").is_none());
        let later = Instant::now() + Duration::from_secs(11);
        sessions.sweep(later).await;
        {
            let entries = sessions.entries();
            assert!(!entries["quiet"].resident, "quiet hibernates");
            assert!(entries["busy"].resident, "an open stream keeps it resident");
        }
        assert_eq!(sessions.len(), 2, "hibernated sessions are still open");
        assert!(sessions.load("quiet").await.unwrap().is_some());
        drop(stream);
        sessions
            .sweep(Instant::now() + Duration::from_secs(301))
            .await;
        assert!(sessions.is_empty(), "idle past the expiry, both end");
    }

    #[tokio::test]
    async fn opening_sessions_count_against_the_limit_until_answered() {
        let sessions = Sessions::new(Duration::from_secs(300), Duration::from_secs(10));
        sessions.store("a", &state()).await.unwrap();
        let opening = sessions.reserve(2).expect("one place left");
        assert_eq!(sessions.reserve(2).err(), Some(2));
        drop(opening);
        assert!(sessions.reserve(2).is_ok());
    }

    #[tokio::test]
    async fn a_hibernated_session_can_be_ended_here_a_resident_one_only_by_rmcp() {
        let sessions = Sessions::new(Duration::from_secs(300), Duration::ZERO);
        sessions.store("a", &state()).await.unwrap();
        assert!(!sessions.end_hibernated("a"), "resident: rmcp ends it");
        sessions.sweep(Instant::now()).await;
        assert!(sessions.end_hibernated("a"));
        assert!(!sessions.contains("a"));
    }
}

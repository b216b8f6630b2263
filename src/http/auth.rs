//! Credentials: login-page users (argon2id) and service API keys (compared
//! in constant time).
//!
//! A login's password check is the most expensive thing an unauthenticated
//! client can ask for (argon2id: 19 MiB and tens of milliseconds of a core).
//! [`Users::sign_in`] spends it only within the budgets of
//! [`throttle`](super::throttle), and on [`HashPool`]: a few threads of its
//! own with a bounded queue, so a flood of guesses never occupies Tokio's
//! blocking pool (which flushes sled for logouts and logins) and never
//! waits in an unbounded line. Over budget or with the queue full the
//! answer is 429 at once, with no hash computed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::HttpRequest;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ErrorCode};
use super::throttle::{client_addr, Budgets, OverBudget};
use crate::config::{AuthConfig, IpNet, UserConfig};

/// A user who may sign in on the login page.
#[derive(Clone)]
struct User {
    password_hash: SecretString,
    role: String,
}

/// The configured users.
#[derive(Clone)]
pub struct Users {
    by_id: HashMap<String, User>,
    /// Verified against when the user is unknown, so an unknown name costs
    /// the same time as a wrong password.
    dummy_hash: SecretString,
}

/// The login gate: the users, the attempt budgets and the hash threads.
#[derive(Clone)]
pub struct Login {
    users: Arc<Users>,
    budgets: Arc<Budgets>,
    pool: HashPool,
    trusted_proxies: Arc<[IpNet]>,
    /// Logins in progress, body to answer, and the most allowed
    /// (`auth.max_logins_in_flight`).
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
}

/// A login in progress ([`Login::admit`]); dropped, it leaves.
#[derive(Debug)]
pub struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Login {
    /// From `[auth]` and `server.trusted_proxies`.
    pub fn new(config: &AuthConfig, trusted_proxies: &[IpNet]) -> Self {
        let workers = match config.hash_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Login {
            users: Arc::new(Users::new(&config.users)),
            budgets: Arc::new(Budgets::new(config)),
            pool: HashPool::new(workers, config.hash_queue),
            trusted_proxies: trusted_proxies.into(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: config.max_logins_in_flight,
        }
    }

    /// Admit one more login, before its body is read: past
    /// `auth.max_logins_in_flight` in progress, 429 `too_many_attempts` at
    /// once (no body read, no budget counted, nothing hashed): the cheapest
    /// refusal a flood can get.
    pub fn admit(&self) -> Result<Admitted, ApiError> {
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted(Arc::clone(&self.in_flight));
        if before >= self.max_in_flight {
            metrics::counter!("edge_session_login_shed_total").increment(1);
            return Err(too_many_attempts(
                OverBudget {
                    retry_after_secs: 1,
                },
                "too many logins in progress; retry later",
            ));
        }
        Ok(admitted)
    }

    /// Check `username` and `password` for the client of `req`: counted
    /// against the client address's and the username's budgets (an unknown
    /// username too), then verified on the hash threads. 429
    /// `too_many_attempts` (with `Retry-After`) over budget or when the
    /// hash queue is full; nothing is hashed then.
    pub async fn sign_in(
        &self,
        req: &HttpRequest,
        username: String,
        password: String,
    ) -> Result<Option<SignedIn>, ApiError> {
        let addr = client_addr(req, &self.trusted_proxies);
        self.budgets
            .attempt(addr, &username)
            .map_err(|over| too_many_attempts(over, "too many login attempts; retry later"))?;
        let users = self.users.clone();
        let answer = self
            .pool
            .try_run(move || users.verify(&username, &password))
            .ok_or_else(|| {
                metrics::counter!("edge_session_login_shed_total").increment(1);
                too_many_attempts(
                    OverBudget {
                        retry_after_secs: 1,
                    },
                    "too many logins in progress; retry later",
                )
            })?;
        answer.await.map_err(|_| ApiError::internal())
    }
}

fn too_many_attempts(over: OverBudget, message: &'static str) -> ApiError {
    metrics::counter!("edge_session_login_throttled_total").increment(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooManyAttempts,
        message,
    )
    .retry_after(over.retry_after_secs)
}

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run password checks, with a bounded wait queue. At most
/// `workers` checks run (and hold argon2's memory) at once, at most `queue`
/// wait; the threads end when the last handle is dropped.
#[derive(Clone)]
pub struct HashPool {
    jobs: SyncSender<Job>,
}

impl HashPool {
    /// `workers` threads (at least 1), `queue` waiting jobs at most.
    pub fn new(workers: usize, queue: usize) -> Self {
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("edge-hash-{i}"))
                .spawn(move || run_jobs(&rx))
                .expect("spawning a hash thread");
        }
        HashPool { jobs }
    }

    /// Queue `f`; `None` at once if the queue is full. The future is its
    /// result (`Err` only if the job panicked).
    pub fn try_run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<tokio::sync::oneshot::Receiver<T>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => Some(rx),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => None,
        }
    }
}

fn run_jobs(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => {
                // A panicking job drops its sender: the caller gets a 500.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

/// A successful sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The user.
    pub user_id: String,
    /// The user's role.
    pub role: String,
}

impl Users {
    /// From `[[auth.users]]` (hashes already validated as PHC strings).
    pub fn new(users: &[UserConfig]) -> Self {
        let by_id = users
            .iter()
            .map(|u| {
                (
                    u.user_id.clone(),
                    User {
                        password_hash: u.password_hash.clone(),
                        role: u.role.clone(),
                    },
                )
            })
            .collect();
        let dummy_hash =
            hash_password("edge-session timing equaliser").expect("hashing a constant cannot fail");
        Users {
            by_id,
            dummy_hash: SecretString::from(dummy_hash),
        }
    }

    /// Check a username and password. CPU-heavy (argon2id): call it on a
    /// [`HashPool`].
    pub fn verify(&self, username: &str, password: &str) -> Option<SignedIn> {
        let (hash, user) = match self.by_id.get(username) {
            Some(user) => (user.password_hash.expose_secret(), Some(user)),
            None => (self.dummy_hash.expose_secret(), None),
        };
        let ok = verify_in_place(hash, password.as_bytes());
        match (ok, user) {
            (true, Some(user)) => Some(SignedIn {
                user_id: username.to_owned(),
                role: user.role.clone(),
            }),
            _ => None,
        }
    }
}

thread_local! {
    /// argon2's working memory (19 MiB at the default cost), kept by each
    /// hash thread: allocating and freeing it per check leaves the
    /// allocator holding several times as much.
    static BLOCKS: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether `password` matches the PHC string `hash`, computed in this
/// thread's kept memory; compared in constant time.
fn verify_in_place(hash: &str, password: &[u8]) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&parsed),
        Algorithm::try_from(parsed.algorithm),
    ) else {
        return false;
    };
    let Ok(version) = parsed.version.map_or(Ok(Version::V0x13), Version::try_from) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let computed = BLOCKS.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon2
            .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
            .is_ok()
    });
    computed && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// Hash `password` as an argon2id PHC string with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| argon2::password_hash::Error::Crypto)?;
    let salt = SaltString::encode_b64(&bytes)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// The service API keys.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// From `api.keys`.
    pub fn new(keys: &[SecretString]) -> Self {
        ApiKeys {
            digests: keys.iter().map(|k| digest(k.expose_secret())).collect(),
        }
    }

    /// Whether `presented` is one of the keys. Both sides are hashed first so
    /// the comparison is fixed-length, and every key is compared, so neither
    /// the length nor the position of a match shows in the timing.
    pub fn accepts(&self, presented: &str) -> bool {
        let candidate = digest(presented);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, d| {
                found | d.ct_eq(&candidate)
            })
            .into()
    }
}

fn digest(key: &str) -> [u8; 32] {
    blake3::derive_key("edge-session 2026-11 api key comparison", key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_the_right_password_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let users = Users::new(&[UserConfig {
            user_id: "alice".into(),
            password_hash: SecretString::from(hash),
            role: "admin".into(),
            demo: false,
        }]);
        assert_eq!(
            users.verify("alice", "correct horse"),
            Some(SignedIn {
                user_id: "alice".into(),
                role: "admin".into()
            })
        );
        assert_eq!(users.verify("alice", "wrong"), None);
        assert_eq!(users.verify("bob", "correct horse"), None);
        assert_eq!(users.verify("", ""), None);
    }

    #[test]
    fn the_hash_pool_sheds_beyond_its_queue() {
        let pool = HashPool::new(1, 1);
        let (started, is_running) = std::sync::mpsc::channel::<()>();
        let (hold, wait) = std::sync::mpsc::channel::<()>();
        let running = pool
            .try_run(move || {
                started.send(()).unwrap();
                wait.recv().is_ok()
            })
            .unwrap();
        is_running.recv().unwrap();
        // The one thread is busy: one job may wait, the next is refused.
        let queued = pool.try_run(|| true).expect("one job may wait");
        assert!(pool.try_run(|| true).is_none(), "the queue is bounded");
        hold.send(()).unwrap();
        assert!(running.blocking_recv().unwrap());
        assert!(queued.blocking_recv().unwrap());
    }

    #[test]
    fn api_keys_match_exactly() {
        let keys = ApiKeys::new(&[
            SecretString::from("k1-0123456789abcdef"),
            SecretString::from("k2-0123456789abcdef"),
        ]);
        assert!(keys.accepts("k1-0123456789abcdef"));
        assert!(keys.accepts("k2-0123456789abcdef"));
        assert!(!keys.accepts("k1-0123456789abcde"));
        assert!(!keys.accepts(""));
        assert!(!ApiKeys::new(&[]).accepts("anything"));
    }
}

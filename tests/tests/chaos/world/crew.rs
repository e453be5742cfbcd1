//! The run's worker processes: `ledgerflow worker` started with the run's
//! settings, its stderr echoed and its last words kept, and the crew of
//! four slots that restarts a worker found exited on its own.
//!
//! Must not touch the queue or the ledger: it only starts, watches and
//! kills processes.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sqlx::PgPool;

use super::{KEY, WORKERS};
use crate::Scale;
use crate::common::{PROVIDER_ENV, database_url};

fn worker_args(scale: &Scale) -> Vec<String> {
    vec![
        "--lease-secs".into(),
        scale.lease_secs.to_string(),
        "--rescue-secs".into(),
        scale.rescue_secs.to_string(),
        "--concurrency".into(),
        scale.concurrency.to_string(),
        // Pulls of payments made in Xero are not part of this story.
        "--xero-pull-secs".into(),
        "3600".into(),
    ]
}

/// Lines of a worker's stderr kept to say why it exited.
const LAST_WORDS: usize = 20;

/// A `ledgerflow worker` process of the run, killed when dropped. Like the
/// end-to-end tests' `WorkerProcess`, but its stderr passes through a
/// thread that echoes it and keeps the last lines, so a worker that exits
/// on its own says why (`ledgerflow: <error>`).
pub struct ChaosWorker {
    pub name: String,
    child: Child,
    last_words: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl ChaosWorker {
    pub(super) fn start(pool: &PgPool, name: &str, scale: &Scale) -> ChaosWorker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledgerflow-e2e"));
        for var in PROVIDER_ENV {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .arg("worker")
            .args(["--worker-id", name])
            .args(worker_args(scale))
            .envs([
                ("LEDGERFLOW_SECRET_KEY", KEY),
                ("LEDGERFLOW_XERO_CLIENT_ID", "sim-client"),
                ("LEDGERFLOW_XERO_CLIENT_SECRET", "sim-secret"),
                ("LEDGERFLOW_SHOPIFY_API_VERSION", "2025-10"),
                ("LEDGERFLOW_LIGHTSPEED_R_CLIENT_ID", "sim-client"),
                ("LEDGERFLOW_LIGHTSPEED_R_CLIENT_SECRET", "sim-secret"),
                ("LEDGERFLOW_LIGHTSPEED_X_CLIENT_ID", "sim-client"),
                ("LEDGERFLOW_LIGHTSPEED_X_CLIENT_SECRET", "sim-secret"),
                ("LEDGERFLOW_QUICKBOOKS_CLIENT_ID", "sim-client"),
                ("LEDGERFLOW_QUICKBOOKS_CLIENT_SECRET", "sim-secret"),
            ])
            .env("DATABASE_URL", database_url(pool))
            .env("LEDGERFLOW_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ledgerflow worker");
        let last_words = Arc::new(Mutex::new(VecDeque::new()));
        let reader = child.stderr.take().map(|stderr| {
            let kept = last_words.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    if let Ok(mut kept) = kept.lock() {
                        if kept.len() == LAST_WORDS {
                            kept.pop_front();
                        }
                        kept.push_back(line);
                    }
                }
            })
        });
        ChaosWorker {
            name: name.into(),
            child,
            last_words,
            reader,
        }
    }

    /// The exit status if the process has ended on its own.
    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last line it wrote, once it has exited (all of its stderr read).
    pub(super) fn last_line(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.last_words
            .lock()
            .ok()
            .and_then(|w| w.back().cloned())
            .unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs, as when a machine dies.
    pub(super) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChaosWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a worker's last words say PostgreSQL refused it connections:
/// the server (shared with other test runs) was out of connection slots
/// for longer than the worker's 10 s acquire timeout while it started.
fn refused_by_postgres(last_line: &str) -> bool {
    last_line.starts_with("ledgerflow: ")
        && [
            "pool timed out while waiting for an open connection",
            "too many clients",
            "remaining connection slots are reserved",
        ]
        .iter()
        .any(|m| last_line.contains(m))
}

/// The four worker slots, the generation of each slot's name, and the
/// workers that exited on their own. The run is their supervisor: a worker
/// found exited is restarted under its slot's next name.
pub(super) struct Crew {
    pub(super) workers: Vec<(usize, ChaosWorker)>,
    pub(super) generation: [usize; WORKERS],
    pub(super) unexpected: Vec<String>,
    pub(super) refused_starts: Vec<String>,
}

impl Crew {
    pub(super) fn start(pool: &PgPool, scale: &Scale) -> Crew {
        Crew {
            workers: (0..WORKERS)
                .map(|i| (i, ChaosWorker::start(pool, &format!("chaos-{i}-g0"), scale)))
                .collect(),
            generation: [0; WORKERS],
            unexpected: Vec::new(),
            refused_starts: Vec::new(),
        }
    }

    /// The slot's next worker name.
    pub(super) fn next_name(&mut self, slot: usize) -> String {
        self.generation[slot] += 1;
        format!("chaos-{slot}-g{}", self.generation[slot])
    }

    /// Restarts every worker that exited on its own, noting why it went:
    /// refused by PostgreSQL at its start (reported), or anything else (a
    /// violation).
    pub(super) fn supervise(&mut self, pool: &PgPool, scale: &Scale) {
        for i in 0..self.workers.len() {
            let slot = self.workers[i].0;
            let w = &mut self.workers[i].1;
            let Some(status) = w.exited() else { continue };
            let last = w.last_line();
            let line = format!("{} exited on its own ({status}): {last}", w.name);
            if refused_by_postgres(&last) {
                self.refused_starts.push(line);
            } else {
                self.unexpected.push(line);
            }
            let name = self.next_name(slot);
            self.workers[i].1 = ChaosWorker::start(pool, &name, scale);
        }
    }
}

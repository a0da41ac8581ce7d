//! A worker's WAL checkpoints, on a thread of their own instead of inside its commits.
//!
//! Why: SQLite's automatic checkpoint runs in the commit that takes the WAL past 1,000 pages,
//! and a checkpoint syncs the WAL and then the database file. Inline on the worker's runtime
//! (see [`super::commit`]), that commit, and every job waiting for it, took milliseconds more:
//! one job in about eighty, which made the tail of one-at-a-time round trips (issue 18). Here
//! the writer's connection checkpoints never, and tells this thread that it committed; the
//! thread checkpoints (PASSIVE: it never waits for, nor blocks, a writer or a reader) at most
//! once per [`PAUSE`] while commits come.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rusqlite::Connection;

use super::{error, settings};

/// Between two checkpoints. A checkpoint syncs the WAL, and the writer's next append to it
/// waits for that sync (the file system's journal commit): one commit in each pause pays it, so
/// the pause sets how many jobs in a thousand meet it. The WAL grows for a pause's commits and
/// is then written over from its start.
pub(super) const PAUSE: Duration = Duration::from_millis(1000);

/// The writer's side: [`Checkpointer::committed`] after each commit. Dropping it ends the
/// thread (after the checkpoint it may be waiting for).
pub(crate) struct Checkpointer {
    wake: SyncSender<()>,
}

impl Checkpointer {
    /// Starts the thread with a connection of its own to `path`. `None` (and a warning) when
    /// either fails: the writer then keeps SQLite's automatic checkpoints.
    pub(super) fn start(path: &Path, store: &Arc<str>) -> Option<Self> {
        let conn = match Connection::open(path)
            .and_then(|c| settings(&c, Duration::ZERO).map(|()| c))
        {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(store = %store, "checkpoints stay in the commits: opening a connection for them failed: {e}");
                return None;
            }
        };
        // One pending wake-up is enough: the thread checkpoints everything committed by then.
        let (wake, woken) = mpsc::sync_channel(1);
        let name = store.clone();
        let spawned = thread::Builder::new()
            .name("cm-checkpoint".into())
            .spawn(move || run(conn, woken, &name));
        match spawned {
            Ok(_) => Some(Self { wake }),
            Err(e) => {
                tracing::warn!(store = %store, "checkpoints stay in the commits: starting their thread failed: {e}");
                None
            }
        }
    }

    /// A commit is in the WAL. Cheap when the thread already has a wake-up waiting (no
    /// system call); a thread that ended (it never does before this side drops) is ignored.
    pub(crate) fn committed(&self) {
        let _ = self.wake.try_send(());
    }
}

fn run(conn: Connection, woken: Receiver<()>, store: &str) {
    let mut failing = false;
    while woken.recv().is_ok() {
        // Wait first: the commits of the pause share one checkpoint.
        thread::sleep(PAUSE);
        match checkpoint(&conn) {
            Ok(()) if failing => {
                tracing::info!("WAL checkpoints of {store} run again");
                failing = false;
            }
            Ok(()) => {}
            // Said once per streak: the next commit tries again. A checkpoint that cannot run
            // (a full disk) only lets the WAL grow, as SQLite's own would, until a commit
            // meets the full disk itself and waits for room (see the store's writer).
            Err(e) if !failing => {
                tracing::warn!(
                    "{}; the WAL is not checkpointed until it passes",
                    error(store, e)
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// One PASSIVE checkpoint: copies what no reader still needs from the WAL into the database.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

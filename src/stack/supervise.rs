//! Keeps services running: a crashed child is logged with its last lines and started again with
//! backoff (1 s, doubling to 30 s; back to 1 s after a minute of good health), instead of taking
//! the whole stack down. Stopping sends each child SIGTERM (anvil dumps its state on it).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ManagedChild, StackError};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// The supervised services of one stack.
#[derive(Debug)]
pub struct Supervisor {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }
}

impl Supervisor {
    /// Keeps `first` running: when it exits, `start` makes a new one (again after each failure).
    pub fn keep<F, Fut>(&mut self, name: &str, first: ManagedChild, start: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<ManagedChild, StackError>> + Send + 'static,
    {
        let rx = self.stop.subscribe();
        self.tasks.push(tokio::spawn(keep_running(
            name.to_owned(),
            first,
            start,
            rx,
        )));
    }

    /// Stops every service (SIGTERM, then SIGKILL after 10 s) and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn keep_running<F, Fut>(
    name: String,
    mut child: ManagedChild,
    mut start: F,
    mut stop: watch::Receiver<bool>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<ManagedChild, StackError>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let since = Instant::now();
        let exit = tokio::select! {
            exit = child.wait_exit() => Some(exit),
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(exit) = exit else {
            child.stop(Duration::from_secs(10)).await;
            return;
        };
        if since.elapsed() > HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::error!("{exit}");
        loop {
            tracing::warn!("restarting {name} in {backoff:?}");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {},
                _ = stop.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match start().await {
                Ok(c) => {
                    tracing::warn!("{name} restarted");
                    child = c;
                    break;
                }
                Err(e) => tracing::error!("{name} did not restart: {e}"),
            }
        }
    }
}

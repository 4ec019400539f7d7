//! Ctrl-C and SIGTERM for the demo: the first signal asks every phase to stop cleanly (the
//! demo then verifies and removes its cluster); a second one exits at once, after stopping the
//! throwaway cluster and removing its directory (unless `--keep`).

use crate::error::{Error, Result};
use crate::ops::shutdown::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The throwaway cluster to clean up on a second signal: (bindir, data directory).
static CLUSTER: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);

pub fn set_cluster(bindir: &Path, data_dir: &Path) {
    if let Ok(mut c) = CLUSTER.lock() {
        *c = Some((bindir.to_path_buf(), data_dir.to_path_buf()));
    }
}

pub fn clear_cluster() {
    if let Ok(mut c) = CLUSTER.lock() {
        *c = None;
    }
}

/// Starts listening; the returned handle fires on the first signal.
pub fn listen(keep: bool) -> Result<Shutdown> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("listening for SIGTERM", e))?;
    let (tx, stop) = Shutdown::manual();
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                r = tokio::signal::ctrl_c() => if r.is_err() { return; },
            }
            count += 1;
            if count == 1 {
                let _ = tx.send(true);
            } else {
                emergency_exit(keep);
            }
        }
    });
    Ok(stop)
}

/// Second signal: stop and remove the throwaway cluster, then exit 130.
fn emergency_exit(keep: bool) -> ! {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        println!();
    }
    let cluster = CLUSTER.lock().ok().and_then(|c| c.clone());
    if let Some((bindir, data)) = cluster {
        if keep {
            println!(
                "demo: second signal: exiting now; the cluster in {} is kept",
                data.display()
            );
        } else {
            println!("demo: second signal: stopping the throwaway cluster and exiting now");
            crate::lab::cluster::stop_data_dir(&bindir, &data);
            if let Some(root) = data.parent() {
                let _ = std::fs::remove_dir_all(root);
            }
        }
    } else {
        println!("demo: second signal: exiting now");
    }
    std::process::exit(130);
}

//! CPU time of processes from Linux's procfs, for the comparison's database cost: a process's
//! own user and system time (`/proc/<pid>/stat` fields 14 and 15), the time of its waited-for
//! children (fields 16 and 17), and the whole cluster's time: the postmaster's own and its
//! exited children's (PostgreSQL's postmaster waits for every backend, parallel worker and
//! autovacuum worker it started, so their time lands in its `cutime`/`cstime` when they exit),
//! plus each live child's own. A leaf: it uses nothing else of the bench.

use std::collections::HashMap;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The fields of `/proc/<pid>/stat` the bench reads, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub ppid: i32,
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
}

impl Stat {
    /// The process's own time, in seconds.
    pub fn own_s(&self) -> f64 {
        (self.utime + self.stime) as f64 / ticks_per_second()
    }
    /// Its own time and that of its waited-for children, in seconds.
    pub fn with_children_s(&self) -> f64 {
        (self.utime + self.stime + self.cutime + self.cstime) as f64 / ticks_per_second()
    }
}

/// Parses one `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses itself: the fields after it start after the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<i64>().ok());
    Some(Stat {
        ppid: num(4)? as i32,
        utime: num(14)?.max(0) as u64,
        stime: num(15)?.max(0) as u64,
        cutime: num(16)?.max(0) as u64,
        cstime: num(17)?.max(0) as u64,
    })
}

/// The stat of one process; None when it is gone (or procfs is not there).
pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process's stat, by pid.
fn all() -> HashMap<i32, Stat> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(s) = stat(pid) {
            out.insert(pid, s);
        }
    }
    out
}

/// One reading of a PostgreSQL cluster's processes.
#[derive(Debug, Clone, Default)]
pub struct ClusterSample {
    /// The postmaster's own and exited children's time plus each live child's own, seconds.
    pub total_s: f64,
    /// Each live child's own time, seconds, by pid.
    pub children: HashMap<i32, f64>,
}

impl ClusterSample {
    /// The time of `pid` in this sample (0 when it was not a live child).
    pub fn of(&self, pid: i32) -> f64 {
        self.children.get(&pid).copied().unwrap_or(0.0)
    }
}

/// Reads the cluster whose postmaster is `postmaster`; None when it is not a process here.
pub fn cluster(postmaster: i32) -> Option<ClusterSample> {
    let procs = all();
    let pm = procs.get(&postmaster)?;
    let mut sample = ClusterSample {
        total_s: pm.with_children_s(),
        children: HashMap::new(),
    };
    for (pid, s) in &procs {
        if s.ppid == postmaster {
            sample.total_s += s.own_s();
            sample.children.insert(*pid, s.own_s());
        }
    }
    Some(sample)
}

/// The CPU seconds `pids` (live children at `end`) spent between two samples; a pid that was
/// not there at `start` counts from zero (it started in between).
pub fn spent_by(start: &ClusterSample, end: &ClusterSample, pids: &[i32]) -> f64 {
    pids.iter()
        .map(|&p| (end.of(p) - start.of(p)).max(0.0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_with_odd_names() {
        let line = "1234 (postgres: a (b) c) S 99 1234 1234 0 -1 4194560 100 0 0 0 250 75 30 12 20 0 1 0 100 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            Stat {
                ppid: 99,
                utime: 250,
                stime: 75,
                cutime: 30,
                cstime: 12
            }
        );
        assert!(parse_stat("1 (x) S 0 1").is_none());
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("procfs");
        assert!(s.own_s() >= 0.0);
        let a = ClusterSample {
            total_s: 1.0,
            children: HashMap::from([(1, 0.5), (2, 0.25)]),
        };
        let b = ClusterSample {
            total_s: 2.0,
            children: HashMap::from([(1, 0.75), (3, 0.5)]),
        };
        assert_eq!(spent_by(&a, &b, &[1, 3]), 0.75);
    }
}

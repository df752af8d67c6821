//! Process memory: the executor's resident set as the kernel counts it (Linux `/proc`),
//! the figure `--memory` is judged by.

/// Resident memory of this process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    /// Resident set now (`VmRSS`).
    pub rss: u64,
    /// Highest resident set since start or the last [`reset_peak`] (`VmHWM`).
    pub peak_rss: u64,
}

/// This process's resident memory; zeros where `/proc/self/status` does not exist.
pub fn read() -> ProcessMemory {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| parse_status(&status))
        .unwrap_or_default()
}

/// Starts a new peak measurement (Linux: writing 5 to `/proc/self/clear_refs` resets
/// `VmHWM` to the current resident set). Returns whether the platform allowed it.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// How many malloc arenas an executor with `cores` task slots runs with: one per two
/// slots, at least two, at most eight.
pub fn malloc_arenas(cores: usize) -> usize {
    cores.div_ceil(2).clamp(2, 8)
}

/// Caps glibc's malloc at [`malloc_arenas`] arenas. By default it makes up to eight per
/// core, one for each thread that meets contention, and a busy executor's task, fetch and
/// runtime threads leave freed memory stranded in all of them: measured on an executor with
/// a 128 MiB `--memory`, the peak resident set of a spilling join fell from 260 to 171 MiB
/// with two arenas (the same cause makes Spark on YARN advise `MALLOC_ARENA_MAX=4`). Call it
/// before the executor's threads start; a no-op on other allocators and platforms.
pub fn limit_malloc_arenas(cores: usize) {
    let arenas = malloc_arenas(cores);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter of glibc's allocator; M_ARENA_MAX is
    // one it documents, and any value >= 1 is valid.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas as libc::c_int);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Returns the allocator's free pages to the system (glibc keeps pages freed inside its
/// heaps until asked, so an idle executor would go on holding its busiest moment's memory).
/// Takes a few milliseconds on a large heap: call it when the executor goes idle.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's heaps to the kernel; it
    // takes no pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The `VmRSS` and `VmHWM` lines of a `/proc/<pid>/status` text, in bytes.
pub fn parse_status(status: &str) -> ProcessMemory {
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |k| k * 1024)
    };
    ProcessMemory {
        rss: kib("VmRSS:"),
        peak_rss: kib("VmHWM:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resident_and_peak_lines() {
        let status = "Name:\tember-executor\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(
            parse_status(status),
            ProcessMemory {
                rss: 100 << 20,
                peak_rss: 200 << 20
            }
        );
        assert_eq!(parse_status("Name: x\n"), ProcessMemory::default());
    }

    #[test]
    fn arenas_grow_with_slots_within_bounds() {
        assert_eq!(malloc_arenas(1), 2);
        assert_eq!(malloc_arenas(4), 2);
        assert_eq!(malloc_arenas(6), 3);
        assert_eq!(malloc_arenas(64), 8);
    }

    #[test]
    fn this_process_has_a_resident_set_on_linux() {
        if cfg!(target_os = "linux") {
            let now = read();
            assert!(now.rss > 0 && now.peak_rss >= now.rss, "{now:?}");
        }
    }
}

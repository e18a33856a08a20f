//! Giving freed heap memory back to the kernel on a long run.
//!
//! glibc's malloc raises its mmap threshold to the largest block freed so far, so
//! after the first frame the inference's buffers (up to tens of MB) come from its
//! arenas, and what is freed there stays resident until it sits at the top of an
//! arena and exceeds twice that threshold. A one-off allocation (a source reopened at
//! another frame size, a report queue filled while the serial peer was away) can so
//! leave a hole of a tensor's size resident for the rest of the run: on a device
//! that runs for months, resident memory would then follow the history of faults,
//! not what is in use. `malloc_trim(0)` returns every free page of every arena.
//!
//! Fixing the threshold instead (`mallopt(M_MMAP_THRESHOLD)`, which also stops the
//! raising) maps and unmaps every large buffer on every frame: measured on x86
//! (AVX-512 VNNI, `edgebone bench`, 1 thread), MobileNetV2 went from 20.8 to 30.8 ms
//! and the int8 YOLOv5n from 79.5 to 92.9 ms. The trim itself, int8 YOLOv5n with a
//! 1 s stats interval (38 trims, same machine): 0.83 ms median, 1.23 ms at most,
//! and the frames after it were not slower above the noise (496 frames: inference
//! median 73.1 ms, p90 77.0 ms; the 27 frames more than 8% over the median had
//! no fixed spacing, as frames after each trim would have).

/// Returns the heap's free pages to the kernel; logs how long it took. Only glibc
/// keeps them; elsewhere (musl, other systems) this does nothing.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let start = std::time::Instant::now();
        // SAFETY: malloc_trim takes no pointers; it only walks the allocator's own
        // lists under their locks, and any thread may call it at any time.
        let released = unsafe { libc::malloc_trim(0) } == 1;
        log::debug!(
            "malloc_trim: {} in {:.2} ms",
            if released {
                "memory released"
            } else {
                "nothing to release"
            },
            start.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Resident memory of this process, in kB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// All resident pages (`VmRSS`): the binary's mapped pages and the rest.
    pub rss_kb: u64,
    /// The anonymous part (`RssAnon`): heap, stacks, mappings of no file.
    pub anon_kb: u64,
}

/// Read from `/proc/self/status`; `None` where there is none.
pub fn resident() -> Option<Resident> {
    parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn parse_status(status: &str) -> Option<Resident> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(Resident {
        rss_kb: field("VmRSS:")?,
        anon_kb: field("RssAnon:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_anon_kb() -> u64 {
        resident().expect("/proc/self/status").anon_kb
    }

    #[test]
    fn status_gives_rss_and_its_anonymous_part() {
        let status =
            "Name:\tedgebone\nVmRSS:\t   44112 kB\nRssAnon:\t   26628 kB\nRssFile:\t   17484 kB\n";
        let resident = parse_status(status);
        assert_eq!(
            resident,
            Some(Resident {
                rss_kb: 44112,
                anon_kb: 26628
            })
        );
        assert_eq!(parse_status("VmRSS:\t12 kB\n"), None);
    }

    /// A freed block below the mmap threshold, held in place by a live block above
    /// it, stays resident until `release_free`.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_freed_block_in_the_middle_of_the_heap_leaves_resident_memory() {
        const MB: usize = 1 << 20;
        // Blocks this size from the heap, as after a first frame, whatever the
        // other tests of this binary did to glibc's moving threshold.
        // SAFETY: mallopt only sets a malloc parameter.
        assert_eq!(
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * MB as i32) },
            1
        );
        let start = rss_anon_kb();
        let hole = std::hint::black_box(vec![1u8; 16 * MB]);
        // Too large for any free space below the hole: it comes after it.
        let fence = std::hint::black_box(vec![1u8; 2 * MB]);
        drop(hole);
        let before = rss_anon_kb();
        assert!(
            before >= start + 8 * 1024,
            "RssAnon {start} kB, then {before} kB with the hole freed: it should still be resident"
        );
        release_free();
        let after = rss_anon_kb();
        drop(fence);
        assert!(
            before >= after + 8 * 1024,
            "RssAnon {before} kB before the trim, {after} kB after: expected most of the 16 MB hole back"
        );
    }
}

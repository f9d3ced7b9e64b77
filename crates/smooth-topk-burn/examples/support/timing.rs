//! Timing shared by the device examples.

use std::time::Instant;

/// Median ms of `reps` calls of `f`, each followed by `sync` (a device synchronisation), after
/// 10 unmeasured calls (kernel compilation, buffer pool).
pub fn median_ms(reps: usize, mut f: impl FnMut(), sync: impl Fn()) -> f64 {
    for _ in 0..10 {
        f();
    }
    sync();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            sync();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

//! The load plan, decided before any request: which room each guest joins
//! (Zipf-like sizes), when sends happen (an open-loop timetable) and when
//! each guest polls (a jittered timetable). Pure and deterministic for a seed.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Room sizes for `guests` spread over `rooms` with Zipf exponent `s`: room
/// `k` gets a share proportional to `1/(k+1)^s` (largest remainder), so a few
/// rooms are big and most are small. When there are at least as many guests
/// as rooms every room gets at least one guest. Sizes are non-increasing.
pub fn zipf_room_sizes(guests: usize, rooms: usize, s: f64) -> Vec<usize> {
    if rooms == 0 {
        return Vec::new();
    }
    let weights: Vec<f64> = (0..rooms).map(|k| 1.0 / ((k + 1) as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| guests as f64 * w / total).collect();
    let mut sizes: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut left = guests - sizes.iter().sum::<usize>();
    // Hand the remainder out by largest fractional part, ties to the lower
    // room index, so the result is deterministic and stays non-increasing.
    let mut order: Vec<usize> = (0..rooms).collect();
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &k in order.iter().cycle() {
        if left == 0 {
            break;
        }
        sizes[k] += 1;
        left -= 1;
    }
    if guests >= rooms {
        // Take from the biggest rooms so that no room is empty.
        for k in (0..rooms).rev() {
            if sizes[k] == 0 {
                let donor = (0..rooms)
                    .max_by_key(|&j| (sizes[j], std::cmp::Reverse(j)))
                    .unwrap_or(0);
                sizes[donor] -= 1;
                sizes[k] = 1;
            }
        }
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes
}

/// The room index of every guest: sizes from [`zipf_room_sizes`], guests
/// shuffled over them with `seed`.
pub fn assign_rooms(guests: usize, rooms: usize, seed: u64) -> Vec<u32> {
    let sizes = zipf_room_sizes(guests, rooms, 1.0);
    let mut out: Vec<u32> = Vec::with_capacity(guests);
    for (k, n) in sizes.iter().enumerate() {
        out.extend(std::iter::repeat_n(k as u32, *n));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    out.shuffle(&mut rng);
    out
}

/// How sends are spaced in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrivals {
    /// Exponential gaps (a Poisson process), like independent people.
    Poisson,
    /// Evenly spaced.
    Even,
}

/// How guests learn of new messages. Each variant is one reading loop
/// (`guest.rs`, `stream.rs` for streams).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// A poll every --poll-interval (±20%), answered at once.
    Poll,
    /// Held polls: each carries `Prefer: wait=S` (--hold-wait) and the
    /// next one goes out as soon as the last is answered.
    Hold,
    /// The edge's event stream (Server-Sent Events), reopened with
    /// `Last-Event-ID` when it ends.
    Stream,
}

impl Transport {
    /// The flag's spelling, for the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Poll => "poll",
            Transport::Hold => "hold",
            Transport::Stream => "stream",
        }
    }

    /// Whether guests send heartbeats: only on timed polls. A held poll or
    /// a stream carries the guest's token, and the edge reports presence
    /// for it (contract: presence without heartbeats).
    pub fn heartbeats(self) -> bool {
        self == Transport::Poll
    }
}

/// The open-loop send timetable: offsets from the start of the run at which
/// sends are due, independent of how fast the server answers.
#[derive(Debug)]
pub struct SendTimetable {
    rate: f64,
    arrivals: Arrivals,
    rng: StdRng,
    next: f64,
    count: u64,
}

impl SendTimetable {
    /// `rate` sends per second in total; a rate of 0 yields nothing.
    pub fn new(rate: f64, arrivals: Arrivals, seed: u64) -> Self {
        let mut t = Self {
            rate,
            arrivals,
            rng: StdRng::seed_from_u64(seed ^ 0x5e4d_5e4d),
            next: 0.0,
            count: 0,
        };
        t.next = t.gap();
        t
    }

    fn gap(&mut self) -> f64 {
        match self.arrivals {
            Arrivals::Even => 1.0 / self.rate,
            Arrivals::Poisson => {
                let u: f64 = self.rng.gen();
                -(1.0 - u).ln() / self.rate
            }
        }
    }
}

impl Iterator for SendTimetable {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return None;
        }
        let at = match self.arrivals {
            // Computed from the count, not summed, so no drift accumulates.
            Arrivals::Even => self.count as f64 / self.rate,
            Arrivals::Poisson => self.next,
        };
        self.count += 1;
        if self.arrivals == Arrivals::Poisson {
            self.next += self.gap();
        }
        Some(Duration::from_secs_f64(at))
    }
}

/// A guest's poll timetable: each poll is due one jittered interval after
/// the previous one was DUE (not after it finished), so a slow answer does
/// not thin out the load, and a late poll's latency counts from when it was
/// due.
#[derive(Debug)]
pub struct PollTimer<I> {
    next: I,
    interval: Duration,
    jitter: f64,
    rng: StdRng,
}

impl<I> PollTimer<I>
where
    I: Copy + std::ops::Add<Duration, Output = I>,
{
    /// The first poll is due at a random point of the first interval, so the
    /// guests' polls spread out.
    pub fn new(start: I, interval: Duration, jitter: f64, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let first = interval.mul_f64(rng.gen_range(0.0..1.0));
        Self {
            next: start + first,
            interval,
            jitter: jitter.clamp(0.0, 0.99),
            rng,
        }
    }

    /// When the next poll is due.
    pub fn due(&self) -> I {
        self.next
    }

    /// Moves on to the poll after the one now due.
    pub fn advance(&mut self) {
        let factor = if self.jitter > 0.0 {
            self.rng.gen_range(1.0 - self.jitter..=1.0 + self.jitter)
        } else {
            1.0
        };
        self.next = self.next + self.interval.mul_f64(factor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_sizes_shape() {
        let sizes = zipf_room_sizes(300, 20, 1.0);
        assert_eq!(sizes.len(), 20);
        assert_eq!(sizes.iter().sum::<usize>(), 300);
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        // H_20 ≈ 3.598: the biggest room holds ~28%, the second ~14%.
        assert!((80..=85).contains(&sizes[0]), "{sizes:?}");
        assert!((40..=43).contains(&sizes[1]), "{sizes:?}");
        assert!(sizes[19] >= 1);
        // Most rooms are small: the top 3 rooms hold more than half.
        assert!(sizes[..3].iter().sum::<usize>() > 150);
    }

    #[test]
    fn zipf_sizes_edge_cases() {
        assert_eq!(zipf_room_sizes(5, 1, 1.0), vec![5]);
        assert_eq!(zipf_room_sizes(3, 3, 1.0), vec![1, 1, 1]);
        let few = zipf_room_sizes(2, 5, 1.0);
        assert_eq!(few.iter().sum::<usize>(), 2);
        assert!(zipf_room_sizes(0, 0, 1.0).is_empty());
        let big = zipf_room_sizes(20_000, 1000, 1.0);
        assert_eq!(big.iter().sum::<usize>(), 20_000);
        assert!(big.iter().all(|&n| n >= 1));
    }

    #[test]
    fn assignment_is_deterministic_per_seed() {
        let a = assign_rooms(1000, 10, 7);
        let b = assign_rooms(1000, 10, 7);
        let c = assign_rooms(1000, 10, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut counts = vec![0usize; 10];
        for r in &a {
            counts[*r as usize] += 1;
        }
        assert_eq!(counts, zipf_room_sizes(1000, 10, 1.0));
    }

    #[test]
    fn even_timetable() {
        let t: Vec<Duration> = SendTimetable::new(4.0, Arrivals::Even, 1).take(5).collect();
        let ms: Vec<u128> = t.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![0, 250, 500, 750, 1000]);
        assert_eq!(SendTimetable::new(0.0, Arrivals::Even, 1).next(), None);
    }

    #[test]
    fn poisson_timetable_has_the_right_rate() {
        let n = SendTimetable::new(50.0, Arrivals::Poisson, 3)
            .take_while(|d| *d < Duration::from_secs(100))
            .count();
        // 5000 expected; the standard deviation is ~71.
        assert!((4700..=5300).contains(&n), "{n}");
        let a: Vec<_> = SendTimetable::new(5.0, Arrivals::Poisson, 9)
            .take(10)
            .collect();
        let b: Vec<_> = SendTimetable::new(5.0, Arrivals::Poisson, 9)
            .take(10)
            .collect();
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn poll_timer_jitter_stays_in_bounds() {
        let start = Duration::ZERO;
        let mut t = PollTimer::new(start, Duration::from_secs(2), 0.2, 5);
        assert!(t.due() < Duration::from_secs(2));
        for _ in 0..1000 {
            let before = t.due();
            t.advance();
            let gap = t.due() - before;
            assert!(
                gap >= Duration::from_millis(1600) && gap <= Duration::from_millis(2400),
                "{gap:?}"
            );
        }
    }
}

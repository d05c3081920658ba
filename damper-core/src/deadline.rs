//! Deadlines: how long a logical request may still take, across every attempt and hedge.
//!
//! A [`Deadline`] is an absolute point in tokio's clock (so it obeys paused time). It travels
//! with the request as an extension (see [`HasDeadline`]); on the wire it becomes the relative
//! `grpc-timeout` header ([`grpc_timeout`]).
//!
//! ```
//! use damper_core::deadline::Deadline;
//! use std::time::Duration;
//! use tokio::time::Instant;
//!
//! let now = Instant::now();
//! let deadline = Deadline::after(now, Duration::from_millis(300));
//! assert_eq!(deadline.remaining(now), Duration::from_millis(300));
//! assert!(deadline.is_expired(now + Duration::from_millis(300)));
//! ```

use std::time::Duration;
use tokio::time::Instant;

/// The point in time by which a logical request must complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline at `at`.
    pub const fn at(at: Instant) -> Self {
        Self { at }
    }

    /// A deadline `timeout` after `now`. A timeout too large to represent is clamped to about
    /// thirty years.
    pub fn after(now: Instant, timeout: Duration) -> Self {
        const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
        let at = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + FAR.min(timeout));
        Self { at }
    }

    /// The instant the deadline falls on.
    pub const fn instant(&self) -> Instant {
        self.at
    }

    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }

    /// Whether the deadline has passed at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.at
    }

    /// The earlier of two deadlines: nested callers can only shorten a deadline.
    pub fn min(self, other: Deadline) -> Deadline {
        if other.at < self.at { other } else { self }
    }
}

/// Request types that can carry a [`Deadline`].
///
/// Implemented for `http::Request` (feature `http`) and `tonic::Request` (feature `grpc`), which
/// keep it in their extensions, and, as "never carries a deadline", for the plain types tests use
/// as requests. Implement it for your own request type to make the layers deadline-aware.
pub trait HasDeadline {
    /// The request's deadline, if it has one.
    fn deadline(&self) -> Option<Deadline>;

    /// Attaches `deadline`; returns `false` if this type cannot carry one.
    fn set_deadline(&mut self, deadline: Deadline) -> bool;
}

macro_rules! no_deadline {
    ($($t:ty),* $(,)?) => {$(
        impl HasDeadline for $t {
            fn deadline(&self) -> Option<Deadline> {
                None
            }
            fn set_deadline(&mut self, _deadline: Deadline) -> bool {
                false
            }
        }
    )*};
}

no_deadline!(
    (),
    bool,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    char,
    String,
    &'static str,
    Vec<u8>,
);

#[cfg(feature = "http")]
impl<B> HasDeadline for http::Request<B> {
    fn deadline(&self) -> Option<Deadline> {
        self.extensions().get::<Deadline>().copied()
    }

    fn set_deadline(&mut self, deadline: Deadline) -> bool {
        self.extensions_mut().insert(deadline);
        true
    }
}

#[cfg(feature = "grpc")]
impl<T> HasDeadline for tonic::Request<T> {
    fn deadline(&self) -> Option<Deadline> {
        self.extensions().get::<Deadline>().copied()
    }

    fn set_deadline(&mut self, deadline: Deadline) -> bool {
        self.extensions_mut().insert(deadline);
        true
    }
}

pub mod grpc_timeout {
    //! The `grpc-timeout` header: `TimeoutValue TimeoutUnit`, at most 8 ASCII digits followed by
    //! one of `H M S m u n` (hours, minutes, seconds, milliseconds, microseconds, nanoseconds).
    //!
    //! ```
    //! use damper_core::deadline::grpc_timeout::{decode, encode};
    //! use std::time::Duration;
    //!
    //! assert_eq!(decode(b"250m"), Ok(Duration::from_millis(250)));
    //! assert_eq!(encode(Duration::from_millis(250)), "250000u");
    //! assert!(decode(b"123456789S").is_err()); // nine digits
    //! ```

    use std::fmt;
    use std::time::Duration;

    /// The name of the header.
    pub const HEADER: &str = "grpc-timeout";

    /// A malformed `grpc-timeout` value.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct InvalidGrpcTimeout(());

    impl fmt::Display for InvalidGrpcTimeout {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("invalid grpc-timeout value")
        }
    }

    impl std::error::Error for InvalidGrpcTimeout {}

    const MAX_DIGITS: usize = 8;
    const MAX_VALUE: u64 = 99_999_999;

    /// Parses a `grpc-timeout` value. Anything but 1–8 ASCII digits and one unit is rejected.
    pub fn decode(value: &[u8]) -> Result<Duration, InvalidGrpcTimeout> {
        let err = InvalidGrpcTimeout(());
        let (unit, digits) = value.split_last().ok_or(err)?;
        if digits.is_empty() || digits.len() > MAX_DIGITS {
            return Err(err);
        }
        let mut n: u64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return Err(err);
            }
            n = n * 10 + u64::from(d - b'0');
        }
        Ok(match unit {
            b'H' => Duration::from_secs(n * 3600),
            b'M' => Duration::from_secs(n * 60),
            b'S' => Duration::from_secs(n),
            b'm' => Duration::from_millis(n),
            b'u' => Duration::from_micros(n),
            b'n' => Duration::from_nanos(n),
            _ => return Err(err),
        })
    }

    /// Parses a `grpc-timeout` value and clamps it to `max` (servers should not trust a caller
    /// to set an unbounded deadline).
    pub fn decode_clamped(value: &[u8], max: Duration) -> Result<Duration, InvalidGrpcTimeout> {
        decode(value).map(|d| d.min(max))
    }

    /// Encodes `timeout` in the finest unit whose value fits in 8 digits, rounding up so the
    /// receiver never sees a shorter deadline than was meant. Saturates at `99999999H`.
    pub fn encode(timeout: Duration) -> String {
        let nanos = timeout.as_nanos();
        const UNITS: [(u128, char); 6] = [
            (1, 'n'),
            (1_000, 'u'),
            (1_000_000, 'm'),
            (1_000_000_000, 'S'),
            (60_000_000_000, 'M'),
            (3_600_000_000_000, 'H'),
        ];
        for (scale, unit) in UNITS {
            let v = nanos.div_ceil(scale);
            if v <= u128::from(MAX_VALUE) {
                return format!("{v}{unit}");
            }
        }
        format!("{MAX_VALUE}H")
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn table() {
            let ok: &[(&[u8], Duration)] = &[
                (b"1H", Duration::from_secs(3600)),
                (b"2M", Duration::from_secs(120)),
                (b"3S", Duration::from_secs(3)),
                (b"4m", Duration::from_millis(4)),
                (b"5u", Duration::from_micros(5)),
                (b"6n", Duration::from_nanos(6)),
                (b"00000010m", Duration::from_millis(10)),
                (b"99999999H", Duration::from_secs(99_999_999 * 3600)),
            ];
            for (input, want) in ok {
                assert_eq!(
                    decode(input),
                    Ok(*want),
                    "{:?}",
                    String::from_utf8_lossy(input)
                );
            }
            let bad: &[&[u8]] = &[
                b"",
                b"S",
                b"1",
                b"1x",
                b"-1S",
                b"+1S",
                b" 1S",
                b"1 S",
                b"1.5S",
                b"123456789n",
                b"1SS",
                b"\xff1S",
                b"1\xff",
            ];
            for input in bad {
                assert!(
                    decode(input).is_err(),
                    "{:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }

        #[test]
        fn clamp() {
            assert_eq!(
                decode_clamped(b"99999999H", Duration::from_secs(30)),
                Ok(Duration::from_secs(30))
            );
        }

        #[test]
        fn encode_picks_fitting_unit() {
            assert_eq!(encode(Duration::ZERO), "0n");
            assert_eq!(encode(Duration::from_nanos(99_999_999)), "99999999n");
            assert_eq!(encode(Duration::from_nanos(100_000_001)), "100001u");
            assert_eq!(encode(Duration::from_secs(1)), "1000000u");
            assert_eq!(encode(Duration::MAX), "99999999H");
        }
    }
}

//! What to inject: [`FaultSpec`] and the [`Latency`] distributions.

use damper_core::rng::Random;
use std::fmt;
use std::time::Duration;

/// Added latency: a fixed delay or one drawn from a distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Always the same delay.
    Fixed(Duration),
    /// Uniform in `[min, max]`.
    Uniform {
        /// Smallest delay.
        min: Duration,
        /// Largest delay.
        max: Duration,
    },
    /// Lognormal with the given median and 99th percentile, the usual shape of service times.
    LogNormal {
        /// The median delay.
        median: Duration,
        /// The 99th-percentile delay (at least the median).
        p99: Duration,
    },
    /// Exponential with the given mean.
    Exponential {
        /// The mean delay.
        mean: Duration,
    },
}

/// The 99th percentile of the standard normal distribution.
pub(crate) const Z99: f64 = 2.326_347_874_040_841;

/// A standard normal draw (Box–Muller).
pub(crate) fn standard_normal<R: Random>(rng: &mut R) -> f64 {
    // 1 - u is in (0, 1], so ln never sees zero.
    let u1 = 1.0 - rng.next_f64();
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn secs(d: f64) -> Duration {
    if d.is_finite() && d > 0.0 {
        Duration::try_from_secs_f64(d).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

impl Latency {
    /// Draws one delay.
    pub fn sample<R: Random>(&self, mut rng: R) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let span = max.saturating_sub(min).as_secs_f64();
                min + secs(span * rng.next_f64())
            }
            Latency::LogNormal { median, p99 } => {
                let m = median.as_secs_f64();
                let sigma = (p99.as_secs_f64() / m).ln() / Z99;
                secs(m * (sigma * standard_normal(&mut rng)).exp())
            }
            Latency::Exponential { mean } => {
                let u = 1.0 - rng.next_f64();
                secs(-mean.as_secs_f64() * u.ln())
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            Latency::Uniform { min, max } if min > max => Err(ConfigError::new(
                "latency.max",
                "must be at least latency.min",
            )),
            Latency::LogNormal { median, .. } if median.is_zero() => Err(ConfigError::new(
                "latency.median",
                "must be greater than zero",
            )),
            Latency::LogNormal { median, p99 } if p99 < median => Err(ConfigError::new(
                "latency.p99",
                "must be at least the median",
            )),
            _ => Ok(()),
        }
    }
}

/// One fault: any combination of added latency, errors, hangs and a capacity cut.
///
/// The default spec injects nothing. Each request draws independently: it hangs with
/// `hang_probability`, otherwise fails with `error_probability`, otherwise passes; latency is
/// added to whatever it gets (an injected error arrives after the added latency too).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultSpec {
    pub(crate) latency: Option<Latency>,
    pub(crate) error_probability: f64,
    pub(crate) hang_probability: f64,
    pub(crate) capacity: Option<u32>,
}

impl FaultSpec {
    /// A spec that injects nothing; add faults with the other methods.
    pub const fn new() -> Self {
        Self {
            latency: None,
            error_probability: 0.0,
            hang_probability: 0.0,
            capacity: None,
        }
    }

    /// Every request fails.
    pub const fn outage() -> Self {
        Self::new().error_probability(1.0)
    }

    /// Every request hangs until its caller drops it.
    pub const fn blackout() -> Self {
        Self::new().hang_probability(1.0)
    }

    /// Adds `latency` to every response.
    pub const fn latency(mut self, latency: Latency) -> Self {
        self.latency = Some(latency);
        self
    }

    /// Fails each request with probability `p` (in `[0, 1]`).
    pub const fn error_probability(mut self, p: f64) -> Self {
        self.error_probability = p;
        self
    }

    /// Hangs each request with probability `p` (in `[0, 1]`): no answer until the caller drops
    /// the future.
    pub const fn hang_probability(mut self, p: f64) -> Self {
        self.hang_probability = p;
        self
    }

    /// Lets at most `max_in_flight` requests through at once; the others fail at once, as a
    /// server with fewer workers and no queue would answer. Only requests admitted while the
    /// cut is active are counted.
    pub const fn capacity(mut self, max_in_flight: u32) -> Self {
        self.capacity = Some(max_in_flight);
        self
    }

    /// The added latency, if any.
    pub const fn get_latency(&self) -> Option<Latency> {
        self.latency
    }

    /// The probability of an injected error.
    pub const fn get_error_probability(&self) -> f64 {
        self.error_probability
    }

    /// The probability of a hang.
    pub const fn get_hang_probability(&self) -> f64 {
        self.hang_probability
    }

    /// The capacity cut, if any.
    pub const fn get_capacity(&self) -> Option<u32> {
        self.capacity
    }

    /// Whether this spec injects nothing at all.
    pub fn is_noop(&self) -> bool {
        self.latency.is_none()
            && self.error_probability <= 0.0
            && self.hang_probability <= 0.0
            && self.capacity.is_none()
    }

    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let unit = |p: f64| (0.0..=1.0).contains(&p);
        if !unit(self.error_probability) {
            return Err(ConfigError::new("error_probability", "must be in [0, 1]"));
        }
        if !unit(self.hang_probability) {
            return Err(ConfigError::new("hang_probability", "must be in [0, 1]"));
        }
        match self.latency {
            Some(l) => l.validate(),
            None => Ok(()),
        }
    }
}

/// An invalid fault configuration: which field, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The offending field.
    pub const fn field(&self) -> &'static str {
        self.field
    }

    /// Why it was rejected.
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid fault config: `{}` {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use damper_core::rng::SplitMix64;

    #[test]
    fn invalid_specs_name_the_field() {
        let ms = Duration::from_millis;
        let table: &[(FaultSpec, &str)] = &[
            (FaultSpec::new().error_probability(1.5), "error_probability"),
            (
                FaultSpec::new().error_probability(-0.1),
                "error_probability",
            ),
            (
                FaultSpec::new().error_probability(f64::NAN),
                "error_probability",
            ),
            (FaultSpec::new().hang_probability(2.0), "hang_probability"),
            (
                FaultSpec::new().latency(Latency::Uniform {
                    min: ms(5),
                    max: ms(1),
                }),
                "latency.max",
            ),
            (
                FaultSpec::new().latency(Latency::LogNormal {
                    median: ms(0),
                    p99: ms(1),
                }),
                "latency.median",
            ),
            (
                FaultSpec::new().latency(Latency::LogNormal {
                    median: ms(10),
                    p99: ms(5),
                }),
                "latency.p99",
            ),
        ];
        for (spec, field) in table {
            assert_eq!(spec.validate().unwrap_err().field(), *field, "{spec:?}");
        }
        assert!(FaultSpec::outage().validate().is_ok());
        assert!(FaultSpec::new().is_noop());
        assert!(!FaultSpec::new().capacity(3).is_noop());
    }

    #[test]
    fn lognormal_hits_its_median_and_p99() {
        let l = Latency::LogNormal {
            median: Duration::from_millis(10),
            p99: Duration::from_millis(100),
        };
        let mut rng = SplitMix64::new(3);
        let mut v: Vec<Duration> = (0..20_000).map(|_| l.sample(&mut rng)).collect();
        v.sort();
        let p50 = v[10_000].as_secs_f64() * 1e3;
        let p99 = v[19_800].as_secs_f64() * 1e3;
        assert!((p50 - 10.0).abs() < 0.6, "p50 {p50}");
        assert!((p99 - 100.0).abs() < 12.0, "p99 {p99}");
    }

    #[test]
    fn uniform_and_exponential_stay_in_shape() {
        let ms = Duration::from_millis;
        let mut rng = SplitMix64::new(9);
        let u = Latency::Uniform {
            min: ms(5),
            max: ms(7),
        };
        for _ in 0..1000 {
            let d = u.sample(&mut rng);
            assert!(d >= ms(5) && d <= ms(7), "{d:?}");
        }
        let e = Latency::Exponential { mean: ms(20) };
        let mean: f64 = (0..20_000)
            .map(|_| e.sample(&mut rng).as_secs_f64())
            .sum::<f64>()
            / 20_000.0;
        assert!((mean * 1e3 - 20.0).abs() < 1.0, "mean {mean}");
        assert_eq!(Latency::Fixed(ms(3)).sample(&mut rng), ms(3));
    }
}

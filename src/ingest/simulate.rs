//! Synthetic readings for `ehr device simulate` and the ingestion bench: daily rhythms, noise,
//! and now and then an out-of-range episode (a run of tachycardia, a desaturation, a
//! hypertensive or hyperglycaemic spell, a fever). No real data anywhere: every value comes
//! from a seeded generator.

use super::vitals::{Vital, observation_json};

/// The current time, unix seconds with a fraction.
pub fn now_secs_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A small, seeded, deterministic generator (SplitMix64): reproducible runs, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        // 53 random bits: exactly representable.
        #[allow(clippy::cast_precision_loss)]
        let v = (self.next_u64() >> 11) as f64;
        v / (1u64 << 53) as f64
    }

    /// Normal with mean 0 and standard deviation `sd` (Box-Muller).
    pub fn normal(&mut self, sd: f64) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// One simulated sensor of one vital.
#[derive(Debug, Clone)]
pub struct Sensor {
    vital: Vital,
    rng: Rng,
    /// Seconds left of the current episode (0: none).
    episode_left: i64,
    /// Chance per reading that an episode starts.
    episode_chance: f64,
}

/// Seconds in a day.
const DAY: f64 = 86_400.0;

impl Sensor {
    /// A sensor of `vital`, seeded with `seed`; about one reading in `1 / episode_chance`
    /// starts an out-of-range episode of a few minutes.
    pub fn new(vital: Vital, seed: u64, episode_chance: f64) -> Self {
        Self {
            vital,
            rng: Rng::new(seed),
            episode_left: 0,
            episode_chance,
        }
    }

    /// The vital it measures.
    pub fn vital(&self) -> Vital {
        self.vital
    }

    /// The reading at `at` (unix seconds), `step` seconds after the previous one: (value,
    /// diastolic for blood pressure).
    pub fn read(&mut self, at: i64, step: i64) -> (f64, Option<f64>) {
        if self.episode_left > 0 {
            self.episode_left -= step.max(1);
        } else if self.rng.unit() < self.episode_chance {
            self.episode_left = 120 + i64::try_from(self.rng.next_u64() % 480).unwrap_or(0);
        }
        let ep = self.episode_left > 0;
        // Lowest at 04:00, highest at 16:00 (a daily rhythm, UTC for simplicity).
        #[allow(clippy::cast_precision_loss)]
        let phase = ((at as f64 - 4.0 * 3_600.0) / DAY * std::f64::consts::TAU).cos();
        let day = -phase; // -1 at 04:00, +1 at 16:00
        let r = &mut self.rng;
        match self.vital {
            Vital::HeartRate => {
                let base = 68.0 + 9.0 * day + r.normal(3.0);
                (
                    (if ep { base + 55.0 } else { base }).clamp(35.0, 220.0),
                    None,
                )
            }
            Vital::Spo2 => {
                let base = 97.4 + r.normal(0.7);
                (
                    (if ep { base - 8.5 } else { base }).clamp(70.0, 100.0),
                    None,
                )
            }
            Vital::BloodPressure => {
                let sys = 116.0 + 8.0 * day + r.normal(4.0) + if ep { 45.0 } else { 0.0 };
                let dia = 75.0 + 5.0 * day + r.normal(3.0) + if ep { 22.0 } else { 0.0 };
                (
                    sys.clamp(70.0, 240.0),
                    Some(dia.clamp(40.0, 140.0).min(sys - 15.0)),
                )
            }
            Vital::Glucose => {
                // Meals at 08:00, 13:00 and 19:00 raise glucose for about two hours.
                #[allow(clippy::cast_precision_loss)]
                let hour = (at.rem_euclid(86_400)) as f64 / 3_600.0;
                let meal: f64 = [8.0, 13.0, 19.0]
                    .iter()
                    .map(|m| {
                        let d = hour - m;
                        if (0.0..2.5).contains(&d) {
                            45.0 * (-(d - 0.75).powi(2) / 0.5).exp()
                        } else {
                            0.0
                        }
                    })
                    .sum();
                let v = 92.0 + meal + r.normal(5.0) + if ep { 120.0 } else { 0.0 };
                (v.clamp(40.0, 600.0), None)
            }
            Vital::BodyTemperature => {
                let v = 36.75 + 0.3 * day + r.normal(0.12) + if ep { 1.8 } else { 0.0 };
                (v.clamp(34.0, 42.0), None)
            }
            Vital::Steps => {
                // Steps in the last `step` seconds: none at night, bursts by day.
                let active = day > -0.3 && r.unit() < 0.4;
                #[allow(clippy::cast_precision_loss)]
                let per_sec = if active { 1.2 + r.unit() } else { 0.0 };
                #[allow(clippy::cast_precision_loss)]
                let v = (per_sec * step.max(1) as f64).round();
                (v, None)
            }
        }
    }

    /// The reading at `at` as a FHIR `Observation`.
    pub fn observation(&mut self, at: i64, step: i64) -> serde_json::Value {
        let (v, second) = self.read(at, step);
        observation_json(self.vital, at, v, second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_readings_pass_validation_and_sometimes_leave_the_normal_range() {
        for vital in Vital::ALL {
            let mut s = Sensor::new(vital, 42, 0.01);
            let mut out = 0;
            for i in 0..2_000 {
                let o = s.observation(1_764_000_000 + i * 60, 60);
                let r = super::super::vitals::readings(o.to_string().as_bytes())
                    .unwrap_or_else(|e| panic!("{vital:?} at {i}: {e}"));
                if r[0].out_of_range() {
                    out += 1;
                }
            }
            if vital != Vital::Steps {
                assert!(
                    out > 0 && out < 1_500,
                    "{vital:?}: {out} of 2000 out of range"
                );
            }
        }
    }

    #[test]
    fn a_seed_gives_the_same_readings() {
        let mut a = Sensor::new(Vital::HeartRate, 7, 0.01);
        let mut b = Sensor::new(Vital::HeartRate, 7, 0.01);
        for i in 0..100 {
            assert_eq!(a.read(i * 5, 5), b.read(i * 5, 5));
        }
    }
}

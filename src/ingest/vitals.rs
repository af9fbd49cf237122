//! The vital signs a device may send, as FHIR R4 `Observation`s: which LOINC codes, which UCUM
//! units, which values are physically possible, and what range is normal (shaded on charts).
//!
//! A reading is refused when it is not FHIR (400) and when it is FHIR but not a vital sign
//! this service knows, in a unit it does not take, or a value no body produces (422): a
//! watch that reports a heart rate of 900 is broken, and its reading would mislead a doctor.

use serde::Serialize;
use serde_json::Value;

/// A vital sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vital {
    /// Heart rate, LOINC 8867-4, `/min`.
    HeartRate,
    /// Oxygen saturation by pulse oximetry, LOINC 59408-5 (or 2708-6), `%`.
    Spo2,
    /// Blood pressure panel, LOINC 85354-9: systolic 8480-6 and diastolic 8462-4, `mm[Hg]`.
    BloodPressure,
    /// Glucose in blood, LOINC 2339-0 `mg/dL` or 15074-8 `mmol/L` (kept in mg/dL).
    Glucose,
    /// Body temperature, LOINC 8310-5, `Cel` or `[degF]` (kept in Cel).
    BodyTemperature,
    /// Steps, LOINC 55423-8, `{steps}` or `1`.
    Steps,
}

impl Vital {
    /// Every vital, in chart order.
    pub const ALL: [Self; 6] = [
        Self::HeartRate,
        Self::Spo2,
        Self::BloodPressure,
        Self::Glucose,
        Self::BodyTemperature,
        Self::Steps,
    ];

    /// The name used in the API and on the command line (`hr`, `spo2`, ...).
    pub fn short(self) -> &'static str {
        match self {
            Self::HeartRate => "hr",
            Self::Spo2 => "spo2",
            Self::BloodPressure => "bp",
            Self::Glucose => "glucose",
            Self::BodyTemperature => "temp",
            Self::Steps => "steps",
        }
    }

    /// The name shown on charts.
    pub fn title(self) -> &'static str {
        match self {
            Self::HeartRate => "Heart rate",
            Self::Spo2 => "Oxygen saturation (SpO2)",
            Self::BloodPressure => "Blood pressure",
            Self::Glucose => "Blood glucose",
            Self::BodyTemperature => "Body temperature",
            Self::Steps => "Steps",
        }
    }

    /// The unit values are kept and shown in (UCUM).
    pub fn unit(self) -> &'static str {
        match self {
            Self::HeartRate => "/min",
            Self::Spo2 => "%",
            Self::BloodPressure => "mm[Hg]",
            Self::Glucose => "mg/dL",
            Self::BodyTemperature => "Cel",
            Self::Steps => "{steps}",
        }
    }

    /// The LOINC code of the observation.
    pub fn loinc(self) -> &'static str {
        match self {
            Self::HeartRate => "8867-4",
            Self::Spo2 => "59408-5",
            Self::BloodPressure => "85354-9",
            Self::Glucose => "2339-0",
            Self::BodyTemperature => "8310-5",
            Self::Steps => "55423-8",
        }
    }

    /// The normal adult resting range, in [`Self::unit`] (for blood pressure: systolic; the
    /// diastolic range is [`DIASTOLIC_NORMAL`]); `None` when there is none (steps).
    pub fn normal(self) -> Option<(f64, f64)> {
        match self {
            Self::HeartRate => Some((60.0, 100.0)),
            Self::Spo2 => Some((95.0, 100.0)),
            Self::BloodPressure => Some((90.0, 120.0)),
            Self::Glucose => Some((70.0, 140.0)),
            Self::BodyTemperature => Some((36.1, 37.5)),
            Self::Steps => None,
        }
    }

    /// Parses [`Self::short`].
    ///
    /// # Errors
    /// For an unknown name, listing the known ones.
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.short() == s)
            .ok_or_else(|| {
                format!("unknown vital {s:?}: one of hr, spo2, bp, glucose, temp, steps")
            })
    }
}

/// Normal diastolic range, mm[Hg].
pub const DIASTOLIC_NORMAL: (f64, f64) = (60.0, 80.0);

/// One reading, in its vital's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reading {
    /// What was measured.
    pub vital: Vital,
    /// When (the observation's effective time), unix seconds.
    pub at: i64,
    /// The value (systolic for blood pressure).
    pub value: f64,
    /// The diastolic value of a blood pressure reading.
    pub second: Option<f64>,
}

impl Reading {
    /// Whether the reading is outside its normal range.
    pub fn out_of_range(&self) -> bool {
        let out = |v: f64, (lo, hi): (f64, f64)| v < lo || v > hi;
        match self.vital.normal() {
            None => false,
            Some(r) => out(self.value, r) || self.second.is_some_and(|d| out(d, DIASTOLIC_NORMAL)),
        }
    }
}

/// Why a resource is not a set of vital signs this service takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VitalsError {
    /// Not JSON, or not FHIR in shape (400).
    #[error("malformed FHIR: {0}")]
    Malformed(String),
    /// FHIR, but not a vital sign this service takes: unknown code, wrong unit, impossible
    /// value (422).
    #[error("{0}")]
    Unsupported(String),
}

/// Most observations in one Bundle.
pub const MAX_BUNDLE_ENTRIES: usize = 1_000;

/// The readings in `resource`: one `Observation`, or a `Bundle` (`collection`) of them.
///
/// # Errors
/// [`VitalsError`] naming the JSON path of the first problem.
pub fn readings(resource: &[u8]) -> Result<Vec<Reading>, VitalsError> {
    let v: Value = serde_json::from_slice(resource)
        .map_err(|e| VitalsError::Malformed(format!("not JSON: {e}")))?;
    let malformed = |m: String| VitalsError::Malformed(m);
    match v.get("resourceType").and_then(Value::as_str) {
        Some("Observation") => Ok(vec![observation(&v, "$")?]),
        Some("Bundle") => {
            let t = v.get("type").and_then(Value::as_str);
            if t != Some("collection") {
                return Err(malformed(format!(
                    "$.type: a Bundle of readings is a \"collection\", not {t:?}"
                )));
            }
            let entries = v
                .get("entry")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("$.entry: a Bundle of readings needs entries".into()))?;
            if entries.is_empty() || entries.len() > MAX_BUNDLE_ENTRIES {
                return Err(malformed(format!(
                    "$.entry: 1 to {MAX_BUNDLE_ENTRIES} entries, not {}",
                    entries.len()
                )));
            }
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let path = format!("$.entry[{i}].resource");
                    let r = e
                        .get("resource")
                        .ok_or_else(|| malformed(format!("{path}: missing")))?;
                    match r.get("resourceType").and_then(Value::as_str) {
                        Some("Observation") => observation(r, &path),
                        other => Err(malformed(format!(
                            "{path}.resourceType: readings are Observations, not {other:?}"
                        ))),
                    }
                })
                .collect()
        }
        other => Err(malformed(format!(
            "$.resourceType: an Observation or a Bundle of them, not {other:?}"
        ))),
    }
}

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const STATUSES: [&str; 4] = ["final", "amended", "corrected", "preliminary"];

/// The LOINC codes of a `code` element.
fn loinc_codes<'a>(code: Option<&'a Value>, path: &str) -> Result<Vec<&'a str>, VitalsError> {
    let codings = code
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .ok_or_else(|| VitalsError::Malformed(format!("{path}.code.coding: missing")))?;
    Ok(codings
        .iter()
        .filter(|c| c.get("system").and_then(Value::as_str) == Some(LOINC))
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .collect())
}

/// A `valueQuantity` in UCUM: its value and unit code.
fn quantity<'a>(q: Option<&'a Value>, path: &str) -> Result<(f64, &'a str), VitalsError> {
    let q = q.ok_or_else(|| VitalsError::Malformed(format!("{path}: missing valueQuantity")))?;
    let value = q
        .get("value")
        .and_then(Value::as_f64)
        .ok_or_else(|| VitalsError::Malformed(format!("{path}.value: missing number")))?;
    if q.get("system").and_then(Value::as_str) != Some(UCUM) {
        return Err(VitalsError::Unsupported(format!(
            "{path}.system: units must be UCUM ({UCUM})"
        )));
    }
    let code = q
        .get("code")
        .and_then(Value::as_str)
        .ok_or_else(|| VitalsError::Malformed(format!("{path}.code: missing UCUM code")))?;
    Ok((value, code))
}

fn within(
    v: f64,
    lo: f64,
    hi: f64,
    what: &str,
    unit: &str,
    path: &str,
) -> Result<f64, VitalsError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(VitalsError::Unsupported(format!(
            "{path}: {what} {v} {unit} is not a possible value ({lo} to {hi})"
        )))
    }
}

fn wrong_unit(path: &str, vital: Vital, got: &str, expected: &str) -> VitalsError {
    VitalsError::Unsupported(format!(
        "{path}.code: {} is measured in {expected}, not {got:?}",
        vital.title()
    ))
}

fn observation(o: &Value, path: &str) -> Result<Reading, VitalsError> {
    let status = o.get("status").and_then(Value::as_str);
    if !status.is_some_and(|s| STATUSES.contains(&s)) {
        return Err(VitalsError::Malformed(format!(
            "{path}.status: one of {STATUSES:?}, not {status:?}"
        )));
    }
    let at = o
        .get("effectiveDateTime")
        .and_then(Value::as_str)
        .ok_or_else(|| VitalsError::Malformed(format!("{path}.effectiveDateTime: missing")))?;
    let at = at
        .parse::<jiff::Timestamp>()
        .map_err(|e| {
            VitalsError::Malformed(format!(
                "{path}.effectiveDateTime: {at:?} is not a date-time with a zone offset ({e})"
            ))
        })?
        .as_second();
    let codes = loinc_codes(o.get("code"), path)?;
    let vital = Vital::ALL
        .into_iter()
        .find(|v| codes.contains(&v.loinc()) || (*v == Vital::Spo2 && codes.contains(&"2708-6")) || (*v == Vital::Glucose && codes.contains(&"15074-8")))
        .ok_or_else(|| {
            VitalsError::Unsupported(format!(
                "{path}.code: LOINC {codes:?} is not a vital sign taken here (heart rate 8867-4, SpO2 59408-5, blood pressure 85354-9, glucose 2339-0/15074-8, body temperature 8310-5, steps 55423-8)"
            ))
        })?;
    let qpath = format!("{path}.valueQuantity");
    let (value, second) = match vital {
        Vital::BloodPressure => {
            let comps = o
                .get("component")
                .and_then(Value::as_array)
                .ok_or_else(|| VitalsError::Malformed(format!("{path}.component: missing")))?;
            let mut sys = None;
            let mut dia = None;
            for (i, c) in comps.iter().enumerate() {
                let cp = format!("{path}.component[{i}]");
                let codes = loinc_codes(c.get("code"), &cp)?;
                let vq = format!("{cp}.valueQuantity");
                let (v, unit) = quantity(c.get("valueQuantity"), &vq)?;
                if unit != "mm[Hg]" {
                    return Err(wrong_unit(&vq, vital, unit, "mm[Hg]"));
                }
                if codes.contains(&"8480-6") {
                    sys = Some(within(v, 40.0, 300.0, "systolic", unit, &vq)?);
                } else if codes.contains(&"8462-4") {
                    dia = Some(within(v, 20.0, 200.0, "diastolic", unit, &vq)?);
                }
            }
            match (sys, dia) {
                (Some(s), Some(d)) if s > d => (s, Some(d)),
                (Some(s), Some(d)) => {
                    return Err(VitalsError::Unsupported(format!(
                        "{path}.component: systolic {s} is not above diastolic {d}"
                    )));
                }
                _ => {
                    return Err(VitalsError::Malformed(format!(
                        "{path}.component: needs systolic (8480-6) and diastolic (8462-4)"
                    )));
                }
            }
        }
        _ => {
            let (v, unit) = quantity(o.get("valueQuantity"), &qpath)?;
            let v = match (vital, unit) {
                (Vital::HeartRate, "/min") => within(v, 20.0, 300.0, "heart rate", unit, &qpath)?,
                (Vital::HeartRate, _) => return Err(wrong_unit(&qpath, vital, unit, "/min")),
                (Vital::Spo2, "%") => within(v, 50.0, 100.0, "SpO2", unit, &qpath)?,
                (Vital::Spo2, _) => return Err(wrong_unit(&qpath, vital, unit, "%")),
                (Vital::Glucose, "mg/dL") => within(v, 10.0, 1000.0, "glucose", unit, &qpath)?,
                (Vital::Glucose, "mmol/L") => {
                    within(v, 0.5, 55.0, "glucose", unit, &qpath)? * 18.016
                }
                (Vital::Glucose, _) => {
                    return Err(wrong_unit(&qpath, vital, unit, "mg/dL or mmol/L"));
                }
                (Vital::BodyTemperature, "Cel") => {
                    within(v, 25.0, 45.0, "temperature", unit, &qpath)?
                }
                (Vital::BodyTemperature, "[degF]") => {
                    (within(v, 77.0, 113.0, "temperature", unit, &qpath)? - 32.0) * 5.0 / 9.0
                }
                (Vital::BodyTemperature, _) => {
                    return Err(wrong_unit(&qpath, vital, unit, "Cel or [degF]"));
                }
                (Vital::Steps, "{steps}" | "1") => {
                    within(v, 0.0, 100_000.0, "steps", unit, &qpath)?
                }
                (Vital::Steps, _) => return Err(wrong_unit(&qpath, vital, unit, "{steps}")),
                (Vital::BloodPressure, _) => unreachable!("handled above"),
            };
            (v, None)
        }
    };
    Ok(Reading {
        vital,
        at,
        value,
        second,
    })
}

/// A FHIR `Observation` of `vital` at `at` (unix seconds): what `ehr device simulate` and the
/// tests send. `second` is the diastolic value of a blood pressure reading.
pub fn observation_json(vital: Vital, at: i64, value: f64, second: Option<f64>) -> Value {
    let when = jiff::Timestamp::from_second(at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let coding = |code: &str, display: &str| serde_json::json!({ "coding": [{ "system": LOINC, "code": code, "display": display }] });
    let q = |v: f64, unit: &str| serde_json::json!({ "value": (v * 10.0).round() / 10.0, "unit": unit, "system": UCUM, "code": unit });
    let mut o = serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": if vital == Vital::Steps { "activity" } else { "vital-signs" } }] }],
        "code": coding(vital.loinc(), vital.title()),
        "effectiveDateTime": when,
    });
    if vital == Vital::BloodPressure {
        o["component"] = serde_json::json!([
            { "code": coding("8480-6", "Systolic blood pressure"), "valueQuantity": q(value, "mm[Hg]") },
            { "code": coding("8462-4", "Diastolic blood pressure"), "valueQuantity": q(second.unwrap_or(value * 0.65), "mm[Hg]") },
        ]);
    } else {
        o["valueQuantity"] = q(value, vital.unit());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: &Value) -> Result<Vec<Reading>, VitalsError> {
        readings(v.to_string().as_bytes())
    }

    #[test]
    fn every_vital_round_trips_through_its_observation() {
        for vital in Vital::ALL {
            let v = vital.normal().map_or(500.0, |(lo, hi)| (lo + hi) / 2.0);
            let o = observation_json(vital, 1_764_000_000, v, Some(70.0));
            let r = one(&o).unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].vital, vital);
            assert_eq!(r[0].at, 1_764_000_000);
        }
        let bundle = serde_json::json!({
            "resourceType": "Bundle", "type": "collection",
            "entry": [
                { "resource": observation_json(Vital::HeartRate, 1, 72.0, None) },
                { "resource": observation_json(Vital::Spo2, 2, 98.0, None) },
            ]
        });
        assert_eq!(one(&bundle).unwrap().len(), 2);
    }

    #[test]
    fn wrong_units_codes_and_impossible_values_are_unsupported() {
        let mut o = observation_json(Vital::HeartRate, 1, 72.0, None);
        o["valueQuantity"]["code"] = "/s".into();
        assert!(matches!(one(&o), Err(VitalsError::Unsupported(m)) if m.contains("/min")));
        let mut o = observation_json(Vital::HeartRate, 1, 72.0, None);
        o["valueQuantity"]["value"] = 900.into();
        assert!(matches!(one(&o), Err(VitalsError::Unsupported(m)) if m.contains("900")));
        let mut o = observation_json(Vital::HeartRate, 1, 72.0, None);
        o["code"]["coding"][0]["code"] = "1234-5".into();
        assert!(matches!(one(&o), Err(VitalsError::Unsupported(_))));
        let mut o = observation_json(Vital::BodyTemperature, 1, 37.0, None);
        o["valueQuantity"]["system"] = "http://example.org".into();
        assert!(matches!(one(&o), Err(VitalsError::Unsupported(_))));
        let o = observation_json(Vital::BloodPressure, 1, 70.0, Some(90.0));
        assert!(matches!(one(&o), Err(VitalsError::Unsupported(m)) if m.contains("not above")));
    }

    #[test]
    fn malformed_fhir_is_malformed() {
        assert!(matches!(readings(b"{"), Err(VitalsError::Malformed(_))));
        assert!(matches!(
            readings(br#"{"resourceType":"Patient"}"#),
            Err(VitalsError::Malformed(_))
        ));
        let mut o = observation_json(Vital::HeartRate, 1, 72.0, None);
        o["effectiveDateTime"] = "yesterday".into();
        assert!(matches!(one(&o), Err(VitalsError::Malformed(_))));
        let mut o = observation_json(Vital::HeartRate, 1, 72.0, None);
        o["status"] = "registered".into();
        assert!(matches!(one(&o), Err(VitalsError::Malformed(_))));
        let b = serde_json::json!({ "resourceType": "Bundle", "type": "collection", "entry": [] });
        assert!(matches!(one(&b), Err(VitalsError::Malformed(_))));
    }

    #[test]
    fn out_of_range_is_judged_on_both_blood_pressure_values() {
        let r = |v, s| Reading {
            vital: Vital::BloodPressure,
            at: 0,
            value: v,
            second: s,
        };
        assert!(!r(115.0, Some(75.0)).out_of_range());
        assert!(r(115.0, Some(95.0)).out_of_range());
        assert!(r(150.0, Some(75.0)).out_of_range());
    }
}

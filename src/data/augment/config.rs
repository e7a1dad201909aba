//! The augmentation's settings ([`AugmentConfig`], [`ElasticConfig`]) and their `--augment`
//! syntax.

use std::fmt;
use std::str::FromStr;

use super::Affine;
use crate::rng::Rng;

/// Elastic distortion (Simard et al. 2003): a displacement field of uniform(-1, 1) values per
/// pixel and axis, smoothed by a Gaussian of standard deviation `sigma` pixels (zero outside the
/// image) and scaled by `alpha` pixels. Defaults: the paper's MNIST values, alpha 34, sigma 4.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ElasticConfig {
    /// Scale of the smoothed field, pixels. Default 34; 0 makes the field zero.
    pub alpha: f32,
    /// Standard deviation of the Gaussian smoothing, pixels. Default 4.
    pub sigma: f32,
}

impl Default for ElasticConfig {
    fn default() -> Self {
        ElasticConfig {
            alpha: 34.0,
            sigma: 4.0,
        }
    }
}

/// Random affine transforms, and optionally elastic distortion, for training images. Each
/// affine field is the largest magnitude drawn: a sample's value is uniform in [-max, max].
///
/// Defaults: everything off, which is the identity (bit for bit). Typical MNIST values:
/// `rotate_deg` 10, `scale` 0.1, `shift_px` 2, `shear_deg` 5.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct AugmentConfig {
    /// Largest rotation, degrees, in [0, 180]. Default 0.
    pub rotate_deg: f32,
    /// Largest relative scale change, in [0, 1): the factor is uniform in [1 - scale,
    /// 1 + scale]. Default 0.
    pub scale: f32,
    /// Largest shift, pixels (>= 0), drawn for x and y independently. Default 0.
    pub shift_px: f32,
    /// Largest shear angle (x sheared in proportion to y), degrees, in [0, 90). Default 0.
    pub shear_deg: f32,
    /// Elastic distortion. Default None.
    pub elastic: Option<ElasticConfig>,
}

/// The spec syntax, for error messages.
const SYNTAX: &str =
    "none, or comma-separated rotate=DEG, scale=FRACTION, shift=PIXELS, shear=DEG, elastic[=ALPHA:SIGMA]";

impl AugmentConfig {
    pub fn with_rotate_deg(mut self, v: f32) -> Self {
        self.rotate_deg = v;
        self
    }

    pub fn with_scale(mut self, v: f32) -> Self {
        self.scale = v;
        self
    }

    pub fn with_shift_px(mut self, v: f32) -> Self {
        self.shift_px = v;
        self
    }

    pub fn with_shear_deg(mut self, v: f32) -> Self {
        self.shear_deg = v;
        self
    }

    pub fn with_elastic(mut self, v: Option<ElasticConfig>) -> Self {
        self.elastic = v;
        self
    }

    /// Checks every value is in its range (see the fields), saying which is not.
    pub fn validate(&self) -> Result<(), String> {
        let check = |v: f32, name: &str, must: &str, ok: bool| {
            if v.is_finite() && ok {
                Ok(())
            } else {
                Err(format!("{name} must be {must}, got {v}"))
            }
        };
        check(
            self.rotate_deg,
            "rotate",
            "degrees in [0, 180]",
            (0.0..=180.0).contains(&self.rotate_deg),
        )?;
        check(
            self.scale,
            "scale",
            "a fraction in [0, 1)",
            (0.0..1.0).contains(&self.scale),
        )?;
        check(self.shift_px, "shift", "pixels >= 0", self.shift_px >= 0.0)?;
        check(
            self.shear_deg,
            "shear",
            "degrees in [0, 90)",
            (0.0..90.0).contains(&self.shear_deg),
        )?;
        if let Some(e) = self.elastic {
            check(e.alpha, "elastic ALPHA", "pixels >= 0", e.alpha >= 0.0)?;
            check(e.sigma, "elastic SIGMA", "pixels > 0", e.sigma > 0.0)?;
        }
        Ok(())
    }

    /// True when nothing is switched on (`none`).
    pub fn is_none(&self) -> bool {
        *self == AugmentConfig::default()
    }

    /// One sample's affine parameters, drawn from `rng` (five uniforms, always, in the order
    /// angle, scale, shift x, shift y, shear).
    pub fn draw(&self, rng: &mut Rng) -> Affine {
        let mut sym = |m: f32| rng.uniform(-m, m);
        Affine {
            angle_deg: sym(self.rotate_deg),
            scale: 1.0 + sym(self.scale),
            shift_x: sym(self.shift_px),
            shift_y: sym(self.shift_px),
            shear_deg: sym(self.shear_deg),
        }
    }
}

impl FromStr for AugmentConfig {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let bad = |what: String| format!("bad augmentation '{spec}': {what}");
        if spec.trim() == "none" {
            return Ok(AugmentConfig::default());
        }
        if spec.trim().is_empty() {
            return Err(format!("empty augmentation: expected {SYNTAX}"));
        }
        let number = |v: &str, name: &str, must: &str, ok: fn(f32) -> bool| {
            v.parse::<f32>()
                .ok()
                .filter(|x| x.is_finite() && ok(*x))
                .ok_or_else(|| bad(format!("{name} must be {must}, got '{v}'")))
        };
        let mut cfg = AugmentConfig::default();
        let mut seen: Vec<&str> = Vec::new();
        for term in spec.split(',') {
            let (key, value) = match term.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (term.trim(), None),
            };
            if seen.contains(&key) {
                return Err(bad(format!("'{key}' is given twice")));
            }
            seen.push(key);
            let needs = |syntax: &str| value.ok_or_else(|| bad(format!("{key} needs a value ({syntax})")));
            match key {
                "rotate" => {
                    let v = needs("rotate=DEG")?;
                    cfg.rotate_deg = number(v, "rotate", "degrees in [0, 180]", |x| (0.0..=180.0).contains(&x))?;
                }
                "scale" => {
                    let v = needs("scale=FRACTION")?;
                    cfg.scale = number(v, "scale", "a fraction in [0, 1)", |x| (0.0..1.0).contains(&x))?;
                }
                "shift" => {
                    let v = needs("shift=PIXELS")?;
                    cfg.shift_px = number(v, "shift", "pixels >= 0", |x| x >= 0.0)?;
                }
                "shear" => {
                    let v = needs("shear=DEG")?;
                    cfg.shear_deg = number(v, "shear", "degrees in [0, 90)", |x| (0.0..90.0).contains(&x))?;
                }
                "elastic" => {
                    cfg.elastic = Some(match value {
                        None => ElasticConfig::default(),
                        Some(v) => {
                            let (a, s) = v
                                .split_once(':')
                                .ok_or_else(|| bad(format!("elastic takes ALPHA:SIGMA, got '{v}'")))?;
                            ElasticConfig {
                                alpha: number(a.trim(), "elastic ALPHA", "pixels >= 0", |x| x >= 0.0)?,
                                sigma: number(s.trim(), "elastic SIGMA", "pixels > 0", |x| x > 0.0)?,
                            }
                        }
                    });
                }
                "none" => return Err(bad("'none' cannot be combined with other terms".into())),
                "" => return Err(bad(format!("empty term (expected {SYNTAX})"))),
                other => return Err(bad(format!("unknown term '{other}' (expected {SYNTAX})"))),
            }
        }
        Ok(cfg)
    }
}

/// The spec syntax (terms that are off left out; `none` when all are), so it parses back.
impl fmt::Display for AugmentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut terms = Vec::new();
        for (name, v) in [
            ("rotate", self.rotate_deg),
            ("scale", self.scale),
            ("shift", self.shift_px),
            ("shear", self.shear_deg),
        ] {
            if v != 0.0 {
                terms.push(format!("{name}={v}"));
            }
        }
        if let Some(e) = self.elastic {
            terms.push(format!("elastic={}:{}", e.alpha, e.sigma));
        }
        if terms.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", terms.join(","))
        }
    }
}

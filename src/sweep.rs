//! `adpq eval --sweep`: the standard list of weight variants a quantizer is judged
//! against (RTN grids, AdpQ settings), built in memory from the input model, and the
//! family of every row of a report (for `cargo xtask sweep`'s table and plot).
//!
//! A new quantizer setting is one more line in [`variants`]; nothing else changes.

use adpq_core::{Grid, ParamFields, Params};
use adpq_eval::RtnSpec;
use clap::ValueEnum;
use serde::Serialize;

use crate::policy::Preset;

/// Which variants `--sweep` scores.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepSet {
    /// Every variant.
    Full,
    /// The cheap ones, for CI: RTN, AdpQ v1, the v2 and v3 presets (v3's the default)
    /// and llama.cpp's Q4_0 (no uniform v2 or v3 rows, no slow llama.cpp types).
    Quick,
}

/// How a variant's projections are made from the input model's.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Round-to-nearest, fake-quantized on the fly.
    Rtn(RtnSpec),
    /// Packed by the adpq quantizer in memory (the bytes `adpq quantize` would write).
    Adpq(Params),
    /// Packed like `adpq quantize --preset` (per-tensor parameters).
    Preset(Preset),
    /// Quantized and decoded by llama.cpp's own quantizer ([`adpq_eval::peer`]) in this
    /// whole-model type, when the peer is built (`scripts/llama-peer.sh`).
    Llama(&'static str),
}

/// One variant of the sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// Plot series and table group: `RTN sym`, `AdpQ v1`...
    pub family: &'static str,
    /// Row name in the report, unique.
    pub name: String,
    /// How it is made.
    pub method: Method,
    /// Scored by `--sweep quick` too.
    pub quick: bool,
}

fn rtn(spec: &str) -> Variant {
    let spec: RtnSpec = spec.parse().expect("the sweep's RTN specs parse");
    Variant {
        family: if spec.asymmetric {
            "RTN asym"
        } else {
            "RTN sym"
        },
        name: spec.to_string(),
        method: Method::Rtn(spec),
        quick: true,
    }
}

fn adpq(family: &'static str, name: &str, params: Params) -> Variant {
    Variant {
        family,
        name: name.into(),
        method: Method::Adpq(params),
        quick: params.version() == adpq_core::FormatVersion::V1,
    }
}

/// llama.cpp's whole-model types in the sweep, and whether `--sweep quick` scores them
/// (the IQ and K types quantize at a few M weights/s).
const LLAMA_TYPES: [(&str, bool); 5] = [
    ("Q4_0", true),
    ("IQ4_NL", false),
    ("IQ4_XS", false),
    ("Q4_K_S", false),
    ("Q4_K_M", false),
];

/// The sweep, in report order: RTN symmetric and asymmetric at g 32/64/128 (4 bits),
/// AdpQ v1 at α .02/.06/.10 (otherwise `quantize`'s defaults), AdpQ v1 asymmetric at
/// α .06 and g 64, AdpQ v2 at α .02/.06/.10 (otherwise `--format v2`'s defaults: 4 bits,
/// g 64) and the `v2-vproj6` preset, AdpQ v3 at g 64 and 32 (4 bits, the code book) and
/// the `v3` preset, and llama.cpp's types when its quantizer is built;
/// `SweepSet::Quick` leaves out the uniform v2 rows and llama.cpp's slow types.
pub fn variants(set: SweepSet) -> Vec<Variant> {
    let v1 = Params::V1;
    let v2 = Params::V2;
    let all = vec![
        rtn("sym-g128"),
        rtn("sym-g64"),
        rtn("sym-g32"),
        rtn("asym-g128"),
        rtn("asym-g64"),
        rtn("asym-g32"),
        adpq(
            "AdpQ v1",
            "adpq-v1-a0.02",
            ParamFields {
                alpha: 0.02,
                ..v1.fields()
            }
            .validate()
            .unwrap(),
        ),
        adpq("AdpQ v1", "adpq-v1-a0.06", v1),
        adpq(
            "AdpQ v1",
            "adpq-v1-a0.10",
            ParamFields {
                alpha: 0.10,
                ..v1.fields()
            }
            .validate()
            .unwrap(),
        ),
        adpq(
            "AdpQ v1 asym",
            "adpq-v1-asym-a0.06-g64",
            ParamFields {
                grid: Grid::Asymmetric,
                group_size: 64,
                ..v1.fields()
            }
            .validate()
            .unwrap(),
        ),
        adpq(
            "AdpQ v2",
            "adpq-v2-a0.02",
            ParamFields {
                alpha: 0.02,
                ..v2.fields()
            }
            .validate()
            .unwrap(),
        ),
        adpq(
            "AdpQ v2",
            "adpq-v2-a0.06",
            ParamFields {
                alpha: 0.06,
                ..v2.fields()
            }
            .validate()
            .unwrap(),
        ),
        adpq(
            "AdpQ v2",
            "adpq-v2-a0.10",
            ParamFields {
                alpha: 0.10,
                ..v2.fields()
            }
            .validate()
            .unwrap(),
        ),
        Variant {
            family: "AdpQ v2 preset",
            name: "adpq-v2-vproj6".into(),
            method: Method::Preset(Preset::V2Vproj6),
            quick: true,
        },
        adpq("AdpQ v3", "adpq-v3-g64", Params::V3),
        adpq(
            "AdpQ v3",
            "adpq-v3-g32",
            ParamFields {
                group_size: 32,
                ..Params::V3.fields()
            }
            .validate()
            .unwrap(),
        ),
        Variant {
            family: "AdpQ v3 preset",
            name: "adpq-v3".into(),
            method: Method::Preset(Preset::V3),
            quick: true,
        },
    ];
    // llama.cpp's types (no importance matrix), where its quantizer is built.
    let llama = LLAMA_TYPES.iter().map(|&(kind, quick)| Variant {
        family: "llama.cpp",
        name: format!("llama.cpp-{kind}"),
        method: Method::Llama(kind),
        quick,
    });
    let llama_built = adpq_eval::peer::LlamaPeer::find().is_some();
    all.into_iter()
        .chain(llama.filter(|_| llama_built))
        .filter(|v| set == SweepSet::Full || v.quick)
        .collect()
}

/// A report row's name and family, as `--report` writes them beside the figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowFamily {
    /// The row's name (`input`, a checkpoint path, a variant name).
    pub name: String,
    /// Its family: `input`, `checkpoint`, `RTN sym`, `AdpQ v1`...
    pub family: String,
}

/// The families of an eval's rows, in report order: the input, the checkpoints, the
/// RTN baselines given with `--rtn`, then the sweep's variants (when `sweep`).
pub fn families(
    checkpoints: &[String],
    rtn: &[RtnSpec],
    sweep: Option<SweepSet>,
) -> Vec<RowFamily> {
    let row = |name: String, family: &str| RowFamily {
        name,
        family: family.into(),
    };
    let mut rows = vec![row("input".into(), "input")];
    rows.extend(checkpoints.iter().map(|c| row(c.clone(), "checkpoint")));
    rows.extend(rtn.iter().map(|s| {
        let family = if s.asymmetric { "RTN asym" } else { "RTN sym" };
        row(s.to_string(), family)
    }));
    if let Some(set) = sweep {
        rows.extend(variants(set).into_iter().map(|v| row(v.name, v.family)));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_covers_rtn_and_adpq_with_unique_names() {
        let v = variants(SweepSet::Full);
        let mut names: Vec<&str> = v.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), v.len(), "names are unique");
        let rtn: Vec<RtnSpec> = v
            .iter()
            .filter_map(|v| match v.method {
                Method::Rtn(s) => Some(s),
                Method::Adpq(_) | Method::Preset(_) | Method::Llama(_) => None,
            })
            .collect();
        for asymmetric in [false, true] {
            for g in [32, 64, 128] {
                let want = RtnSpec {
                    bits: 4,
                    group_size: g,
                    asymmetric,
                };
                assert!(rtn.contains(&want), "{want} is swept");
            }
        }
        let alphas: Vec<f64> = v
            .iter()
            .filter(|v| v.family == "AdpQ v1")
            .map(|v| match &v.method {
                Method::Adpq(p) => {
                    let defaults = ParamFields {
                        alpha: p.alpha(),
                        ..Params::V1.fields()
                    }
                    .validate()
                    .unwrap();
                    assert_eq!(*p, defaults, "{}: only α differs", v.name);
                    p.alpha()
                }
                _ => panic!("{} is not AdpQ with parameters", v.name),
            })
            .collect();
        assert_eq!(alphas, [0.02, 0.06, 0.10]);
        let v2_alphas: Vec<f64> = v
            .iter()
            .filter(|v| v.family == "AdpQ v2")
            .map(|v| match &v.method {
                Method::Adpq(p) => {
                    assert_eq!(
                        *p,
                        ParamFields {
                            alpha: p.alpha(),
                            ..Params::V2.fields()
                        }
                        .validate()
                        .unwrap(),
                        "{}: only α differs from v2's defaults",
                        v.name
                    );
                    p.alpha()
                }
                _ => panic!("{} is not AdpQ with parameters", v.name),
            })
            .collect();
        assert_eq!(v2_alphas, [0.02, 0.06, 0.10]);
        assert!(v
            .iter()
            .any(|v| v.method == Method::Preset(Preset::V2Vproj6)));
    }

    #[test]
    fn families_follow_the_report_order() {
        let rtn: RtnSpec = "asym-g64".parse().unwrap();
        let f = families(&["a.safetensors".into()], &[rtn], Some(SweepSet::Full));
        assert_eq!(f.len(), 3 + variants(SweepSet::Full).len());
        assert_eq!(
            f[..3],
            [
                RowFamily {
                    name: "input".into(),
                    family: "input".into()
                },
                RowFamily {
                    name: "a.safetensors".into(),
                    family: "checkpoint".into()
                },
                RowFamily {
                    name: "rtn-asym-g64-b4".into(),
                    family: "RTN asym".into()
                },
            ]
        );
        assert_eq!(f[3].name, variants(SweepSet::Full)[0].name);
        assert_eq!(families(&[], &[], None).len(), 1);
    }

    /// `--sweep quick` keeps CI fast: every v1 and RTN row, of formats v2 and v3 only
    /// the presets (v3's the default), and of llama.cpp (when its quantizer is built)
    /// only Q4_0.
    #[test]
    fn the_quick_sweep_has_one_row_per_preset() {
        let full = variants(SweepSet::Full);
        let quick = variants(SweepSet::Quick);
        let v2 = |v: &&Variant| v.family.starts_with("AdpQ v2");
        let v3 = |v: &&Variant| v.family.starts_with("AdpQ v3");
        let llama = |v: &&Variant| v.family == "llama.cpp";
        assert_eq!(quick.iter().filter(v2).count(), 1);
        assert_eq!(full.iter().filter(v2).count(), 4);
        assert_eq!(quick.iter().filter(v3).count(), 1);
        assert!(quick.iter().any(|v| v.method == Method::Preset(Preset::V3)));
        assert_eq!(full.iter().filter(v3).count(), 3);
        let built = adpq_eval::peer::LlamaPeer::find().is_some();
        assert_eq!(full.iter().filter(llama).count(), if built { 5 } else { 0 });
        assert_eq!(quick.iter().filter(llama).count(), usize::from(built));
        assert_eq!(
            quick.len(),
            full.len() - 3 - 2 - if built { 4 } else { 0 },
            "only the uniform v2 and v3 rows and the slow llama.cpp types are left out"
        );
    }
}

//! Element-wise activations without parameters: `relu`, `clip`, `sigmoid`, `hard_sigmoid`,
//! `hard_swish`, `silu`, `gelu`.
//!
//! They share one contract (one input, shape preserved, no parameters, no MACs, channels
//! follow the input, [`Role::Activation`]); each differs only in its attribute check and its
//! PyTorch spelling, declared through the private [`Elementwise`] trait and turned into a
//! [`Contract`] by the `elementwise!` macro.

use serde::{Deserialize, Serialize};

use super::onnx::{NameBase, OnnxAttr, OnnxContext, OnnxRef, OnnxSpec};
use super::roles::{AfterSurgery, Scoring};
use super::{Arity, Channels, Contract, Op, ParamSpec, Role, ShapeInput};

/// What distinguishes one element-wise activation from another.
trait Elementwise: Clone + Into<Op> {
    /// Checks the attributes (default: nothing to check).
    fn check_attributes(&self) -> Result<(), String> {
        Ok(())
    }
    /// The `torch.nn` module, or `None` when `forward` writes an expression.
    fn module(&self) -> Option<String>;
    /// What scorers need to know (no default: every activation says it).
    fn scoring_role(&self) -> Scoring;
    /// How it is written in ONNX (no default: every activation says it).
    fn onnx_spec(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String>;
    /// The op computing `x · self(x)`, if any (default: none; see
    /// [`Contract::self_gated`]).
    fn times_input(&self) -> Option<Op> {
        None
    }
    /// The expression in `forward` (default: call the module on the input).
    fn forward(&self, inputs: &[String], module: &str) -> String {
        format!("{module}({})", inputs[0])
    }
}

/// Implements [`Contract`] for element-wise activations from their [`Elementwise`] impl.
macro_rules! elementwise {
    ($($ty:ty),* $(,)?) => {$(
        impl Contract for $ty {
            fn arity(&self) -> Arity {
                Arity::exactly(1)
            }
            fn role(&self) -> Role {
                Role::Activation
            }
            fn check(&self) -> Result<(), String> {
                self.check_attributes()
            }
            fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
                Ok(inputs[0].1.to_vec())
            }
            follows_its_input!();
            fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
                self.onnx_spec(ctx)
            }
            fn after_surgery(&self) -> AfterSurgery {
                AfterSurgery::Nothing
            }
            fn scoring(&self) -> Scoring {
                self.scoring_role()
            }
            fn self_gated(&self) -> Option<Op> {
                self.times_input()
            }
            fn torch_module(&self) -> Option<String> {
                self.module()
            }
            fn torch_forward(&self, inputs: &[String], module: &str) -> String {
                self.forward(inputs, module)
            }
        }
    )*};
}

elementwise!(
    Relu,
    Clip,
    Sigmoid,
    Tanh,
    HardSigmoid,
    HardSwish,
    Silu,
    Gelu
);

/// Rectified linear unit. Channel behaviour: follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relu {}

impl Elementwise for Relu {
    fn scoring_role(&self) -> Scoring {
        Scoring {
            analysis_activation: true,
            ..Scoring::default()
        }
    }
    fn onnx_spec(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::single("Relu", vec![]))
    }
    fn module(&self) -> Option<String> {
        Some("nn.ReLU()".to_owned())
    }
}

/// `min(max(x, min), max)` (`torch.clamp`; ONNX `Clip`). ReLU6 is `min = 0, max = 6`.
/// Channel behaviour: follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clip {
    /// Lower bound (finite, below `max`).
    pub min: f64,
    /// Upper bound (finite, above `min`).
    pub max: f64,
}

impl Clip {
    /// Whether this is ReLU6 (`min = 0, max = 6`).
    pub fn is_relu6(&self) -> bool {
        self.min == 0.0 && self.max == 6.0
    }
}

impl Elementwise for Clip {
    fn scoring_role(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx_spec(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        let mut s = OnnxSpec::default();
        let lo = s.scalar(".min", self.min as f32);
        let hi = s.scalar(".max", self.max as f32);
        s.node("", "Clip", vec![OnnxRef::Input(0), lo, hi], None, vec![]);
        Ok(s)
    }
    fn check_attributes(&self) -> Result<(), String> {
        if !self.min.is_finite() || !self.max.is_finite() || self.min >= self.max {
            return Err(format!(
                "clip needs finite bounds with min < max (ReLU6 is min = 0, max = 6); found min = {}, max = {}",
                self.min, self.max
            ));
        }
        Ok(())
    }
    fn module(&self) -> Option<String> {
        Some(if self.is_relu6() {
            "nn.ReLU6()".to_owned()
        } else {
            format!("nn.Hardtanh({:?}, {:?})", self.min, self.max)
        })
    }
}

/// The logistic function `1 / (1 + e^-x)` (`torch.nn.Sigmoid`). Channel behaviour: follows
/// its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sigmoid {}

impl Elementwise for Sigmoid {
    fn scoring_role(&self) -> Scoring {
        Scoring::default()
    }
    fn times_input(&self) -> Option<Op> {
        Some(Silu {}.into())
    }
    fn onnx_spec(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::single("Sigmoid", vec![]))
    }
    fn module(&self) -> Option<String> {
        Some("nn.Sigmoid()".to_owned())
    }
}

/// The hyperbolic tangent (`torch.nn.Tanh`; MaxViT's classifier). Channel behaviour:
/// follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tanh {}

impl Elementwise for Tanh {
    fn scoring_role(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx_spec(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::single("Tanh", vec![]))
    }
    fn module(&self) -> Option<String> {
        Some("nn.Tanh()".to_owned())
    }
}

fn sixth() -> f64 {
    1.0 / 6.0
}

fn half() -> f64 {
    0.5
}

/// `clamp(alpha·x + beta, 0, 1)` (ONNX `HardSigmoid`). The defaults, `alpha = 1/6` and
/// `beta = 0.5`, are PyTorch's `torch.nn.Hardsigmoid` (`relu6(x + 3) / 6`); note that ONNX's
/// own default alpha is 0.2, so an importer should always write both. Channel behaviour:
/// follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardSigmoid {
    /// Slope (default 1/6; finite and non-zero).
    #[serde(default = "sixth")]
    pub alpha: f64,
    /// Offset (default 0.5; finite).
    #[serde(default = "half")]
    pub beta: f64,
}

impl Default for HardSigmoid {
    fn default() -> Self {
        HardSigmoid {
            alpha: sixth(),
            beta: half(),
        }
    }
}

impl HardSigmoid {
    /// Whether this is PyTorch's `Hardsigmoid` (`alpha = 1/6, beta = 0.5`), compared in
    /// single precision so that an ONNX file's float32 `alpha` (0.16666667) counts.
    pub fn is_pytorch(&self) -> bool {
        self.alpha as f32 == sixth() as f32 && self.beta as f32 == 0.5
    }
}

impl Elementwise for HardSigmoid {
    fn scoring_role(&self) -> Scoring {
        Scoring {
            saved_for_backward: 1,
            ..Scoring::default()
        }
    }
    fn onnx_spec(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::single(
            "HardSigmoid",
            vec![
                ("alpha", OnnxAttr::Float(self.alpha as f32)),
                ("beta", OnnxAttr::Float(self.beta as f32)),
            ],
        ))
    }
    fn check_attributes(&self) -> Result<(), String> {
        if !self.alpha.is_finite() || !self.beta.is_finite() || self.alpha == 0.0 {
            return Err(format!(
                "hard_sigmoid needs a finite, non-zero alpha and a finite beta (PyTorch's Hardsigmoid is alpha = 1/6, beta = 0.5); found alpha = {}, beta = {}",
                self.alpha, self.beta
            ));
        }
        Ok(())
    }
    fn module(&self) -> Option<String> {
        self.is_pytorch().then(|| "nn.Hardsigmoid()".to_owned())
    }
    fn forward(&self, inputs: &[String], module: &str) -> String {
        if self.is_pytorch() {
            format!("{module}({})", inputs[0])
        } else {
            format!(
                "torch.clamp({} * {:?} + {:?}, 0.0, 1.0)",
                inputs[0], self.alpha, self.beta
            )
        }
    }
}

/// `x · hardsigmoid(x)` = `x · relu6(x + 3) / 6` (`torch.nn.Hardswish`; MobileNetV3).
/// Channel behaviour: follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardSwish {}

impl Elementwise for HardSwish {
    fn scoring_role(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx_spec(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::single("HardSwish", vec![]))
    }
    fn module(&self) -> Option<String> {
        Some("nn.Hardswish()".to_owned())
    }
}

/// `x · sigmoid(x)` (`torch.nn.SiLU`, also called swish; EfficientNet). Channel behaviour:
/// follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silu {}

impl Elementwise for Silu {
    fn scoring_role(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx_spec(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // Sigmoid then Mul.
        let mut s = OnnxSpec::default();
        let gate = s.temp(NameBase::Value, ".sigmoid");
        s.node(
            ".sigmoid",
            "Sigmoid",
            vec![OnnxRef::Inputs],
            Some(gate),
            vec![],
        );
        s.node(
            "",
            "Mul",
            vec![OnnxRef::Input(0), OnnxRef::Decl(gate)],
            None,
            vec![],
        );
        Ok(s)
    }
    fn module(&self) -> Option<String> {
        Some("nn.SiLU()".to_owned())
    }
}

fn none() -> String {
    "none".to_owned()
}

/// Gaussian error linear unit (`torch.nn.GELU`): exact (`approximate = "none"`, the
/// default) or with the tanh approximation (`"tanh"`). Channel behaviour: follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gelu {
    /// `"none"` (exact, default) or `"tanh"`.
    #[serde(default = "none")]
    pub approximate: String,
}

impl Default for Gelu {
    fn default() -> Self {
        Gelu {
            approximate: none(),
        }
    }
}

impl Elementwise for Gelu {
    fn scoring_role(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx_spec(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // ONNX's `Gelu` from opset 20, else its formula with `Erf` (exact) or `Tanh`.
        if ctx.opset >= 20 {
            return Ok(OnnxSpec::single(
                "Gelu",
                vec![("approximate", OnnxAttr::Str(self.approximate.clone()))],
            ));
        }
        let mut s = OnnxSpec::default();
        let mut step = 0;
        let mut tmp = |s: &mut OnnxSpec| {
            step += 1;
            s.temp(NameBase::Value, &format!(".{step}"))
        };
        let x = OnnxRef::Input(0);
        let d = OnnxRef::Decl;
        let inner = if self.approximate == "tanh" {
            // tanh(√(2/π) · (x + 0.044715 · x³))
            let (sq, cube, scaled, sum, arg, th) = (
                tmp(&mut s),
                tmp(&mut s),
                tmp(&mut s),
                tmp(&mut s),
                tmp(&mut s),
                tmp(&mut s),
            );
            let c = s.scalar(".coef", 0.044715);
            let k = s.scalar(".scale", (2.0f64 / std::f64::consts::PI).sqrt() as f32);
            s.node(".square", "Mul", vec![x, x], Some(sq), vec![]);
            s.node(".cube", "Mul", vec![d(sq), x], Some(cube), vec![]);
            s.node(".scale_cube", "Mul", vec![d(cube), c], Some(scaled), vec![]);
            s.node(".inner", "Add", vec![x, d(scaled)], Some(sum), vec![]);
            s.node(".arg", "Mul", vec![d(sum), k], Some(arg), vec![]);
            s.node(".tanh", "Tanh", vec![d(arg)], Some(th), vec![]);
            th
        } else {
            // erf(x / √2)
            let (arg, e) = (tmp(&mut s), tmp(&mut s));
            let r = s.scalar(".sqrt2", std::f32::consts::SQRT_2);
            s.node(".div", "Div", vec![x, r], Some(arg), vec![]);
            s.node(".erf", "Erf", vec![d(arg)], Some(e), vec![]);
            e
        };
        let (plus, prod) = (tmp(&mut s), tmp(&mut s));
        let one = s.scalar(".one", 1.0);
        let half = s.scalar(".half", 0.5);
        s.node(".plus_one", "Add", vec![d(inner), one], Some(plus), vec![]);
        s.node(".times_x", "Mul", vec![x, d(plus)], Some(prod), vec![]);
        s.node("", "Mul", vec![d(prod), half], None, vec![]);
        Ok(s)
    }
    fn check_attributes(&self) -> Result<(), String> {
        match self.approximate.as_str() {
            "none" | "tanh" => Ok(()),
            other => Err(format!(
                "gelu approximate must be \"none\" or \"tanh\", found {other:?}"
            )),
        }
    }
    fn module(&self) -> Option<String> {
        Some(format!("nn.GELU(approximate={:?})", self.approximate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_attributes_are_rejected_with_the_fix() {
        for (min, max) in [
            (6.0, 0.0),
            (1.0, 1.0),
            (f64::NAN, 1.0),
            (0.0, f64::INFINITY),
        ] {
            let e = Clip { min, max }.check().unwrap_err();
            assert!(e.contains("min < max"), "{e}");
        }
        assert!(Clip { min: 0.0, max: 6.0 }.check().is_ok());
        let e = HardSigmoid {
            alpha: 0.0,
            beta: 0.5,
        }
        .check()
        .unwrap_err();
        assert!(e.contains("non-zero alpha"), "{e}");
        assert!(
            HardSigmoid {
                alpha: 0.2,
                beta: f64::NAN
            }
            .check()
            .is_err()
        );
        let e = Gelu {
            approximate: "erf".into(),
        }
        .check()
        .unwrap_err();
        assert!(e.contains("\"none\" or \"tanh\""), "{e}");
    }

    #[test]
    fn pytorch_spellings() {
        let x = ["t0".to_owned()];
        let m = "self.get_submodule(\"a\")";
        assert_eq!(
            Clip { min: 0.0, max: 6.0 }.torch_module().as_deref(),
            Some("nn.ReLU6()")
        );
        assert_eq!(
            Clip {
                min: -1.0,
                max: 2.5
            }
            .torch_module()
            .as_deref(),
            Some("nn.Hardtanh(-1.0, 2.5)")
        );
        // ONNX stores alpha as float32: still PyTorch's Hardsigmoid.
        let f32_alpha = HardSigmoid {
            alpha: f64::from(1.0f32 / 6.0),
            beta: 0.5,
        };
        assert_eq!(
            f32_alpha.torch_module().as_deref(),
            Some("nn.Hardsigmoid()")
        );
        let onnx_default = HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        };
        assert_eq!(onnx_default.torch_module(), None);
        assert_eq!(
            onnx_default.torch_forward(&x, m),
            "torch.clamp(t0 * 0.2 + 0.5, 0.0, 1.0)"
        );
        assert_eq!(
            Gelu {
                approximate: "tanh".into()
            }
            .torch_module()
            .as_deref(),
            Some("nn.GELU(approximate=\"tanh\")")
        );
        assert_eq!(Silu {}.torch_forward(&x, m), format!("{m}(t0)"));
    }

    #[test]
    fn defaults_are_pytorchs() {
        let h: Op = toml::from_str("type = \"hard_sigmoid\"").unwrap();
        assert_eq!(h, HardSigmoid::default().into());
        let Op::HardSigmoid(h) = h else {
            unreachable!()
        };
        assert!(h.is_pytorch());
        let g: Op = toml::from_str("type = \"gelu\"").unwrap();
        assert_eq!(g, Gelu::default().into());
        assert!(toml::from_str::<Op>("type = \"clip\"\nmin = 0.0").is_err());
        assert!(toml::from_str::<Op>("type = \"silu\"\nbeta = 1.0").is_err());
    }
}

//! `linear`: fully connected layer.

use serde::{Deserialize, Serialize};

use super::onnx::{NameBase, OnnxAttr, OnnxConst, OnnxContext, OnnxRef, OnnxSpec};
use super::roles::{AfterSurgery, Refit, Scoring};
use super::{
    Arity, Channels, Contract, Init, Op, ParamKind, ParamSpec, Reads, Role, ShapeInput,
    checked_numel, is_true, nonzero, py_bool, unit_count, yes,
};

/// Fully connected layer (`torch.nn.Linear`). Units are output features.
///
/// It reads features `[F]` (output `[out_features]`) or tokens `[T, F]`, acting on the last
/// axis of every token as PyTorch does (output `[T, out_features]`; MACs `T · F · out`).
///
/// Channel behaviour: creates its output features as prunable units and reads every input
/// feature (its weight's axis 1 follows the input; after a flatten each input channel is H·W
/// consecutive features).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    /// Features read.
    pub in_features: usize,
    /// Features produced.
    pub out_features: usize,
    /// Whether there is a bias (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub bias: bool,
}

impl Linear {
    /// A linear layer with a bias.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        Linear {
            in_features,
            out_features,
            bias: true,
        }
    }
}

impl Contract for Linear {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Refit(Refit {
            weight_inputs: self.in_features,
            bias: self.bias,
            window: None,
            groups: 1,
        })
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn with_bias(&self, bias: bool) -> Option<Op> {
        Some(
            Linear {
                bias,
                ..self.clone()
            }
            .into(),
        )
    }
    fn folds_output_scale(&self) -> bool {
        true
    }
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        let gemm = || vec![("transB", OnnxAttr::Int(1))];
        let Some(&[t, f]) = ctx.inputs.first().copied() else {
            return Ok(OnnxSpec::with_params("Gemm", gemm()));
        };
        // Tokens: [N, T, F] → [N·T, F] → Gemm → [N·T, out] → [N, T, out].
        let mut s = OnnxSpec::default();
        let rows = s.constant(".rows", OnnxConst::I64(vec![-1, f as i64]));
        let back = s.constant(
            ".shape",
            OnnxConst::I64(vec![-1, t as i64, self.out_features as i64]),
        );
        let p = s.params();
        let flat = s.temp(NameBase::Value, ".rows");
        let out = s.temp(NameBase::Value, ".gemm");
        s.node(
            ".to_rows",
            "Reshape",
            vec![OnnxRef::Input(0), rows],
            Some(flat),
            vec![],
        );
        s.node(
            ".gemm",
            "Gemm",
            vec![OnnxRef::Decl(flat), p],
            Some(out),
            gemm(),
        );
        s.node("", "Reshape", vec![OnnxRef::Decl(out), back], None, vec![]);
        Ok(s)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }

    fn role(&self) -> Role {
        Role::Layer
    }

    fn check(&self) -> Result<(), String> {
        nonzero("in_features", self.in_features)?;
        nonzero("out_features", self.out_features)?;
        checked_numel("the weight", &[self.out_features, self.in_features])?;
        Ok(())
    }

    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        match inputs[0].1 {
            [f] if *f == self.in_features => Ok(vec![self.out_features]),
            [t, f] if *f == self.in_features => Ok(vec![*t, self.out_features]),
            s => Err(format!(
                "in_features is {} but the input '{}' has shape {s:?}{}",
                self.in_features,
                inputs[0].0,
                if s.len() > 2 {
                    " (add a flatten node before a linear layer)"
                } else {
                    ""
                }
            )),
        }
    }

    fn params(&self, node: &str) -> Vec<ParamSpec> {
        let init = Init::UniformFanIn {
            fan_in: self.in_features,
        };
        let mut v = vec![
            ParamSpec::new(
                node,
                ParamKind::Weight,
                vec![self.out_features, self.in_features],
                init,
            )
            .out_axis(0)
            .in_axis(1),
        ];
        if self.bias {
            v.push(
                ParamSpec::new(node, ParamKind::Bias, vec![self.out_features], init).out_axis(0),
            );
        }
        v
    }

    fn macs(&self, output: &[usize]) -> Option<u64> {
        // One in_features-long dot product per output value: F · out, times T for tokens.
        output
            .iter()
            .try_fold(self.in_features as u64, |acc, &d| acc.checked_mul(d as u64))
    }

    fn channels(&self) -> Channels {
        Channels::Create {
            units: self.out_features,
            reads: Reads::All,
        }
    }

    fn narrowed(&self, inputs: &[&[usize]], units: Option<usize>) -> Result<Op, String> {
        Ok(Linear {
            in_features: unit_count(inputs[0]),
            out_features: units.unwrap_or(self.out_features),
            bias: self.bias,
        }
        .into())
    }

    fn torch_module(&self) -> Option<String> {
        Some(format!(
            "nn.Linear({}, {}, bias={})",
            self.in_features,
            self.out_features,
            py_bool(self.bias)
        ))
    }
}

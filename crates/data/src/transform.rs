//! Turning bytes into model inputs: channel conversion, padding or resizing to the model's
//! input size, normalisation, and training-only augmentation.

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::dataset::Dataset;
use crate::error::{DataError, valid_range};

/// The largest tensor a transform builds for one batch (float32): the batch itself, and the
/// padded copy random cropping makes. 16 GiB is a hundred times an ImageNet batch of 256
/// (3×224×224: 154 MB); settings that would need more are refused before anything is
/// allocated ([`Transform::check_input`]), instead of failing (or aborting) inside libtorch.
pub const MAX_BATCH_BYTES: u64 = 16 << 30;

/// `transform.resize` may be at most this many times the larger side of the model input: the
/// centre crop then keeps 1/256 of the resized image (torchvision's default is 256/224 ≈ 1.14).
const MAX_RESIZE_FACTOR: usize = 16;

/// Bytes of a float32 tensor of shape `dims`, if it fits in a `u64`.
fn float_bytes(dims: &[usize]) -> Option<u64> {
    dims.iter()
        .try_fold(4u64, |acc, &d| acc.checked_mul(d as u64))
}

/// Random crop (after zero padding) and horizontal flip, for training only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Pad by this many pixels, then crop back to size at a random offset (0: no crop). At
    /// most the smaller side of the model input ([`Transform::check_input`]).
    #[serde(default)]
    pub crop_padding: usize,
    /// Flip horizontally with probability ½.
    #[serde(default)]
    pub flip: bool,
}

/// How images become inputs.
///
/// In-memory datasets ([`Dataset`]), in order: grey → RGB (when the model wants 3 channels
/// and the data has 1), scale to [0, 1], pad (centred, with zeros) or resize (bilinear) to
/// the model's H×W, normalise per channel, then (training only) augment.
///
/// ImageFolder sources ([`crate::ImageFolder`]) apply torchvision's standard transforms:
/// `Resize(resize)` + `CenterCrop(crop)` for evaluation and calibration,
/// `RandomResizedCrop` + flip for training with `augment`, then scale and normalise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// Per-channel mean subtracted after scaling to [0, 1] (one value, or one per channel;
    /// finite).
    /// Empty: not given — the model's own preprocessing applies where the caller knows it
    /// ([`Transform::or_model`]), else 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by (finite and positive; with `mean`, pixels in
    /// [0, 1] must stay finite once normalised: [`Transform::check`]). Empty: not given —
    /// the model's own, else 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub std: Vec<f32>,
    /// Training-only augmentation. ImageFolder sources: `RandomResizedCrop(H×W, scale =
    /// (0.08, 1), ratio = (3/4, 4/3))`, then a horizontal flip when `flip`.
    #[serde(default)]
    pub augment: Option<Augment>,
    /// ImageFolder sources: the shorter side is resized to this many pixels before the
    /// centre crop (evaluation and calibration). Default `round(min(H, W) · 256 / 224)`:
    /// 256 for a 224×224 model, as torchvision's `Resize(256)`. At least 1, at most 16 times
    /// the larger side of the model input ([`Transform::check_input`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<usize>,
    /// ImageFolder sources: the centre crop `[height, width]`; it must equal the model's
    /// input H×W (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<[usize; 2]>,
}

impl Default for Transform {
    /// No normalisation given (the model's own applies, else none), no augmentation, the
    /// default resize and crop.
    fn default() -> Self {
        Transform {
            mean: Vec::new(),
            std: Vec::new(),
            augment: None,
            resize: None,
            crop: None,
        }
    }
}

impl Transform {
    /// The same transform without the training-only augmentation: what evaluation,
    /// calibration and the after-surgery steps apply.
    ///
    /// ```
    /// use fair_data::{Augment, Transform};
    /// let train = Transform { mean: vec![0.5], augment: Some(Augment { crop_padding: 4, flip: true }), ..Default::default() };
    /// let eval = train.for_evaluation();
    /// assert_eq!(eval.augment, None);
    /// assert_eq!(eval.mean, vec![0.5]);
    /// ```
    pub fn for_evaluation(&self) -> Transform {
        Transform {
            augment: None,
            ..self.clone()
        }
    }

    /// Whether this transform sets its own normalisation (`mean` or `std` given).
    pub fn gives_normalization(&self) -> bool {
        !self.mean.is_empty() || !self.std.is_empty()
    }

    /// The mean and std applied: the given values, or 0 and 1 where a list is empty.
    pub fn normalization(&self) -> (Vec<f32>, Vec<f32>) {
        let or = |v: &[f32], fill: f32| if v.is_empty() { vec![fill] } else { v.to_vec() };
        (or(&self.mean, 0.0), or(&self.std, 1.0))
    }

    /// This transform with `mean` and `std` (a model's recorded preprocessing) filled in
    /// where it gives no normalisation of its own; a transform that gives either keeps both
    /// of its own lists.
    ///
    /// ```
    /// use fair_data::Transform;
    /// let t = Transform::default().or_model(&[0.5], &[0.25]);
    /// assert_eq!(t.normalization(), (vec![0.5], vec![0.25]));
    /// let mine = Transform { mean: vec![0.1], std: vec![0.2], ..Default::default() };
    /// assert_eq!(mine.clone().or_model(&[0.5], &[0.25]), mine);
    /// ```
    pub fn or_model(self, mean: &[f64], std: &[f64]) -> Self {
        if self.gives_normalization() {
            return self;
        }
        Transform {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: std.iter().map(|&s| s as f32).collect(),
            ..self
        }
    }

    /// Checks the settings against the model's input channels (what can be checked before
    /// the input size is known; [`Transform::check_input`] checks the rest): one mean and
    /// std value or one per channel, every mean finite, every std finite and positive, and
    /// `(0 − mean) / std` and `(1 − mean) / std` finite (in f32) for every channel; errors
    /// name the setting and its value.
    pub fn check(&self, channels: usize) -> Result<(), DataError> {
        let (mean, std) = self.normalization();
        for (what, v) in [("mean", &mean), ("std", &std)] {
            if v.len() != 1 && v.len() != channels {
                return Err(DataError::Invalid(format!(
                    "transform {what} has {} values; give one, or one per channel ({channels})",
                    v.len()
                )));
            }
        }
        if let Some(i) = std.iter().position(|s| !s.is_finite() || *s <= 0.0) {
            return Err(DataError::Invalid(format!(
                "transform std[{i}] = {} must be a finite positive number",
                std[i]
            )));
        }
        if let Some(i) = mean.iter().position(|m| !m.is_finite()) {
            return Err(DataError::Invalid(format!(
                "transform mean[{i}] = {} must be finite",
                mean[i]
            )));
        }
        // Pixels scaled to [0, 1] must stay finite once normalised (a tiny std or a huge
        // mean would make every input ±inf).
        for k in 0..mean.len().max(std.len()) {
            let (m, s) = (mean[k % mean.len()], std[k % std.len()]);
            if !((0.0 - m) / s).is_finite() || !((1.0 - m) / s).is_finite() {
                return Err(DataError::Invalid(format!(
                    "transform mean = {m} and std = {s} (channel {k}) normalise pixels in \
                     [0, 1] to infinity: std must be larger, or mean smaller"
                )));
            }
        }
        if self.resize == Some(0) {
            return Err(DataError::Invalid(
                "transform.resize = 0 is out of range: it must be at least 1".into(),
            ));
        }
        if let Some(c) = self.crop
            && c.contains(&0)
        {
            return Err(DataError::Invalid(format!(
                "transform.crop = {c:?} must be at least 1×1"
            )));
        }
        Ok(())
    }

    /// Checks every setting that sizes an allocation against the model input
    /// `[C, H, W]` and the batch size, before anything is allocated (and [`Transform::check`]
    /// first). Errors name the setting, its value and the allowed range:
    ///
    /// - the input's C, H and W are at least 1;
    /// - `augment.crop_padding` is at most `min(H, W)` (the padded image is then at most 9
    ///   times the input);
    /// - `resize` is in `1..=16·max(H, W)`;
    /// - `crop` equals `[H, W]`;
    /// - the batch tensor (`batch × C × H × W` float32, `batch` at least 1) and its padded
    ///   copy for random cropping are each at most [`MAX_BATCH_BYTES`].
    ///
    /// [`Transform::batch`] and the [`crate::ImageFolder`] batches call it; call it early to
    /// fail before data is loaded.
    ///
    /// ```
    /// use fair_data::{Augment, Transform};
    /// let t = Transform {
    ///     augment: Some(Augment { crop_padding: 100_000, flip: false }),
    ///     ..Default::default()
    /// };
    /// let e = t.check_input([1, 28, 28], 64).unwrap_err().to_string();
    /// assert!(e.contains("augment.crop_padding = 100000") && e.contains("0..=28"), "{e}");
    /// ```
    pub fn check_input(&self, input: [usize; 3], batch: usize) -> Result<(), DataError> {
        let [c, h, w] = input;
        if input.contains(&0) {
            return Err(DataError::Invalid(format!(
                "the model input {c}×{h}×{w} is empty: channels, height and width must be at \
                 least 1"
            )));
        }
        self.check(c)?;
        let p = self.augment.map_or(0, |a| a.crop_padding);
        if p > h.min(w) {
            return Err(DataError::Invalid(format!(
                "transform.augment.crop_padding = {p} is out of range for the {h}×{w} model \
                 input: it must be in 0..={} (at most the input's smaller side)",
                h.min(w)
            )));
        }
        if let Some(r) = self.resize {
            let most = h.max(w).saturating_mul(MAX_RESIZE_FACTOR);
            if r > most {
                return Err(DataError::Invalid(format!(
                    "transform.resize = {r} is out of range for the {h}×{w} model input: it \
                     must be in 1..={most} (at most {MAX_RESIZE_FACTOR} times the input's \
                     larger side)"
                )));
            }
        }
        if let Some([ch, cw]) = self.crop
            && [ch, cw] != [h, w]
        {
            return Err(DataError::Invalid(format!(
                "transform.crop = [{ch}, {cw}] must equal the model's input height and width \
                 [{h}, {w}]"
            )));
        }
        // The padded copy is the larger tensor when there is padding; an empty batch still
        // needs room for one input (a folder decodes into a buffer of at least one).
        let pad = |side: usize| side.checked_add(p)?.checked_add(p);
        let bytes = pad(h)
            .zip(pad(w))
            .and_then(|(ph, pw)| float_bytes(&[batch.max(1), c, ph, pw]))
            .filter(|&b| b <= MAX_BATCH_BYTES);
        if bytes.is_none() {
            let (ph, pw) = (h as u128 + 2 * p as u128, w as u128 + 2 * p as u128);
            return Err(DataError::Invalid(format!(
                "a batch of {batch} inputs of {c}×{h}×{w}{} needs more than the \
                 {MAX_BATCH_BYTES}-byte limit for one batch tensor: lower the batch size",
                if p > 0 {
                    format!(" (padded by transform.augment.crop_padding = {p} to {ph}×{pw})")
                } else {
                    String::new()
                }
            )));
        }
        Ok(())
    }

    /// The batch `indices` of `data` as `(inputs [B, C, H, W] float, labels [B] int64)` for a
    /// model whose input is `[channels, height, width]`. `rng` drives augmentation, which is
    /// applied only when `train` is true.
    pub fn batch(
        &self,
        data: &Dataset,
        indices: &[usize],
        input: [usize; 3],
        train: bool,
        rng: &mut impl Rng,
    ) -> Result<(Tensor, Tensor), DataError> {
        let [c, h, w] = input;
        let [dc, dh, dw] = data.shape;
        if dc != c && !(dc == 1 && c == 3) {
            return Err(DataError::Invalid(format!(
                "'{}' has {dc}-channel images but the model expects {c} channels",
                data.name
            )));
        }
        if self.resize.is_some() || self.crop.is_some() {
            return Err(DataError::Invalid(format!(
                "transform resize and crop apply to ImageFolder sources (source = \"folder\"); \
                 '{}' is held in memory at {dh}×{dw}: remove them",
                data.name
            )));
        }
        self.check_input(input, indices.len())?;
        // The batch at the data's own size, before padding or resizing to the input.
        if float_bytes(&[indices.len(), c, dh, dw]).is_none_or(|b| b > MAX_BATCH_BYTES) {
            return Err(DataError::Invalid(format!(
                "a batch of {} images of {c}×{dh}×{dw} from '{}' needs more than the \
                 {MAX_BATCH_BYTES}-byte limit for one batch tensor: lower the batch size",
                indices.len(),
                data.name
            )));
        }
        if let Some(&i) = indices.iter().find(|&&i| i >= data.len()) {
            return Err(DataError::Invalid(format!(
                "image {i} is outside '{}': {}",
                data.name,
                valid_range(data.len(), "images")
            )));
        }
        if indices.is_empty() {
            let empty = (Kind::Float, tch::Device::Cpu);
            return Ok((
                Tensor::zeros([0, c as i64, h as i64, w as i64], empty),
                Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu)),
            ));
        }
        let b = indices.len() as i64;
        let mut bytes = Vec::with_capacity(indices.len() * dc * dh * dw);
        for &i in indices {
            bytes.extend_from_slice(data.image(i));
        }
        let mut x = Tensor::from_slice(&bytes)
            .reshape([b, dc as i64, dh as i64, dw as i64])
            .to_kind(Kind::Float)
            / 255.0;
        if dc == 1 && c == 3 {
            x = x.expand([b, 3, dh as i64, dw as i64], false).contiguous();
        }
        if (dh, dw) != (h, w) {
            x = if h >= dh && w >= dw {
                let (top, left) = ((h - dh) / 2, (w - dw) / 2);
                x.constant_pad_nd([
                    left as i64,
                    (w - dw - left) as i64,
                    top as i64,
                    (h - dh - top) as i64,
                ])
            } else {
                x.upsample_bilinear2d([h as i64, w as i64], false, None, None)
            };
        }
        let per_channel = |v: &[f32]| {
            let v: Vec<f32> = if v.len() == 1 {
                vec![v[0]; c]
            } else {
                v.to_vec()
            };
            Tensor::from_slice(&v).view([1, c as i64, 1, 1])
        };
        let (mean, std) = self.normalization();
        x = (x - per_channel(&mean)) / per_channel(&std);
        if train && let Some(a) = self.augment {
            x = augment(&x, a, rng);
        }
        let labels: Vec<i64> = indices.iter().map(|&i| data.labels[i]).collect();
        Ok((x, Tensor::from_slice(&labels)))
    }
}

fn augment(x: &Tensor, a: Augment, rng: &mut impl Rng) -> Tensor {
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    let p = a.crop_padding as i64;
    let padded = if p > 0 {
        x.constant_pad_nd([p, p, p, p])
    } else {
        x.shallow_clone()
    };
    let samples: Vec<Tensor> = (0..size[0])
        .map(|i| {
            let mut img = padded.get(i);
            if p > 0 {
                let (dy, dx) = (rng.gen_range(0..=2 * p), rng.gen_range(0..=2 * p));
                img = img.narrow(1, dy, h).narrow(2, dx, w);
            }
            if a.flip && rng.gen_bool(0.5) {
                img = img.flip([2]);
            }
            img
        })
        .collect();
    Tensor::stack(&samples, 0)
}

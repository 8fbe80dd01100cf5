//! IR node names from what an ONNX file reveals about PyTorch's module names.

/// Whether `s` is a usable IR name: ASCII letters, digits, `_` and `.`, not starting with a
/// digit or a dot, no empty segment.
pub(crate) fn is_clean(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !s.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && !s.ends_with('.')
        && !s.contains("..")
}

/// `s` with other characters replaced by `_` and empty segments removed.
pub(crate) fn clean(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let t = t
        .split('.')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(".");
    let t = t.trim_matches('_').to_owned();
    if t.starts_with(|c: char| c.is_ascii_digit()) {
        format!("n{t}")
    } else {
        t
    }
}

/// Whether `s` is `<prefix><digits>` or `<prefix><digits>_<digits>` (dynamo's `n0_18`).
pub(crate) fn is_numbered(s: &str, prefix: char) -> bool {
    s.strip_prefix(prefix).is_some_and(|r| {
        !r.is_empty()
            && r.split('_')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    })
}

/// The module path in a TorchScript scope name: `/layer1/layer1.0/conv1/Conv` →
/// `layer1.0.conv1`. Ops that are not modules in PyTorch (`Add`, `Mul`, `Concat`, ...) get
/// their name appended (`layer1.0.add`).
pub(crate) fn scope_path(name: &str, op_type: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    let (last, scopes) = parts.split_last()?;
    // Each scope is a module's name relative to the previous scope, which a Sequential's
    // child repeats as a prefix: `downsample` then `downsample.0`.
    let mut path = String::new();
    let mut prev: Option<&str> = None;
    for s in scopes {
        match prev
            .and_then(|p| s.strip_prefix(p))
            .filter(|r| r.starts_with('.'))
        {
            Some(rest) => path.push_str(rest),
            None if path.is_empty() => path.push_str(s),
            None => {
                path.push('.');
                path.push_str(s);
            }
        }
        prev = Some(s);
    }
    let functional = matches!(
        op_type,
        "Add" | "Sum" | "Mul" | "Concat" | "Flatten" | "Reshape" | "Squeeze" | "ReduceMean"
    );
    let path = if path.is_empty() {
        last.to_ascii_lowercase()
    } else if functional {
        format!("{path}.{}", last.to_ascii_lowercase())
    } else {
        path
    };
    let c = clean(&path);
    (!c.is_empty()).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_become_module_paths() {
        assert_eq!(
            scope_path("/layer1/layer1.0/conv1/Conv", "Conv").as_deref(),
            Some("layer1.0.conv1")
        );
        assert_eq!(
            scope_path("/features/features.12/features.12.0/Conv", "Conv").as_deref(),
            Some("features.12.0")
        );
        assert_eq!(
            scope_path("/layer4/layer4.1/Add", "Add").as_deref(),
            Some("layer4.1.add")
        );
        assert_eq!(
            scope_path("/Flatten", "Flatten").as_deref(),
            Some("flatten")
        );
        assert_eq!(scope_path("/fc/Gemm", "Gemm").as_deref(), Some("fc"));
        assert_eq!(
            scope_path("/layer2/layer2.0/downsample/downsample.0/Conv", "Conv").as_deref(),
            Some("layer2.0.downsample.0")
        );
        assert_eq!(
            scope_path(
                "/features/features.1/features.1.0/block/block.0/block.0.0/Conv",
                "Conv"
            )
            .as_deref(),
            Some("features.1.0.block.0.0")
        );
        assert!(is_numbered("n0_18", 'n') && !is_numbered("net", 'n'));
        assert_eq!(clean("onnx::Conv_193"), "onnx__Conv_193");
        assert!(!is_clean("0.x") && is_clean("layer1.0.conv1") && !is_clean("a..b"));
    }
}

//! YAML as the proxy reads it: one parser (serde-saphyr) with one explicit budget, sized for the
//! largest legitimate input (a 50 MB objects file, or one `kind: List` document of that size)
//! and no larger, so that a hostile file fails fast instead of costing minutes of CPU.

use serde::de::DeserializeOwned;

/// The largest input read, in bytes.
pub const MAX_INPUT_BYTES: usize = 256 << 20;

/// The options: YAML 1.2 scalars, and the budget: per document (the reader enforces it document by document), every limit at
/// least the size of a 50 MB document can reach (a node, an event or a scalar byte costs at
/// least one input byte), except nesting: Kubernetes objects nest about ten deep, so 64 is
/// ample, and a file of nested `[` is refused at that depth.
pub fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(MAX_INPUT_BYTES);
    budget.max_events = MAX_INPUT_BYTES;
    budget.max_nodes = MAX_INPUT_BYTES;
    budget.max_total_scalar_bytes = MAX_INPUT_BYTES;
    budget.max_depth = 64;
    budget.flow_nesting_limit = 64;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // YAML 1.2's booleans only (`true`/`false`), as before: YAML 1.1's `n`, `no`, `off` would
    // turn a Node named `n` into `false`.
    options.strict_booleans = true;
    options
}

/// Deserializes each non-empty document of `text` in turn and hands it to `f` with its 1-based
/// position among the non-empty documents; stops at the first error, `f`'s or the parser's
/// (`parse_error` turns the latter into `E`).
pub fn each_document<T, E>(
    text: &str,
    mut f: impl FnMut(usize, T) -> Result<(), E>,
    parse_error: impl Fn(usize, serde_saphyr::Error) -> E,
) -> Result<(), E>
where
    T: DeserializeOwned,
{
    let mut reader = text.as_bytes();
    for (i, document) in serde_saphyr::read_with_options::<_, T>(&mut reader, options()).enumerate() {
        let index = i + 1;
        f(index, document.map_err(|e| parse_error(index, e))?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn documents(text: &str) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        each_document(
            text,
            |_, v: Value| {
                out.push(v);
                Ok(())
            },
            |i, e| format!("document {i}: {e}"),
        )?;
        Ok(out)
    }

    /// serde_yaml spent 26 s of CPU on a 200 KB file of nested `[`; the budget refuses it at
    /// depth 64, after reading 64 bytes of it.
    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(200_000);
        let err = documents(&text).unwrap_err();
        assert!(err.starts_with("document 1:"), "{err}");
        assert!(documents(&format!("{}{}", "[".repeat(30), "]".repeat(30))).is_ok(), "30 deep is fine");
    }

    /// YAML 1.2 scalars: only `true`/`false` are booleans, so a Node named `n` keeps its name.
    #[test]
    fn only_true_and_false_are_booleans() {
        let docs = documents("metadata: {name: n}\nother: [no, off, yes, true]\n").unwrap();
        assert_eq!(docs[0]["metadata"]["name"], "n");
        assert_eq!(docs[0]["other"], serde_json::json!(["no", "off", "yes", true]));
    }

    /// One `kind: List` document beyond every default limit (1,024 documents, 250,000 nodes,
    /// 1,000,000 events) loads: the budget is sized for real files, not the library's defaults.
    #[test]
    fn a_large_list_document_loads() {
        let items: String = (0..60_000)
            .map(|i| {
                format!(
                    "- {{kind: Service, metadata: {{name: s{i}, namespace: ns}}, spec: {{ports: [{{port: 80}}]}}}}\n"
                )
            })
            .collect();
        let text = format!("kind: List\nitems:\n{items}");
        let docs = documents(&text).unwrap();
        assert_eq!(docs[0]["items"].as_array().map(Vec::len), Some(60_000));
        let many: String = (0..2_000).map(|i| format!("---\nn: {i}\n")).collect();
        assert_eq!(documents(&many).unwrap().len(), 2_000);
    }
}

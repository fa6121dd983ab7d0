//! The shipped fraud model (models/fraud/1/model.onnx) run in process by tract scores the
//! shipped reference rows like Python onnxruntime did when the training script wrote them.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float32Array, RecordBatch};
use streamgate::inference::onnx::OnnxBackend;
use streamgate::inference::protocol::{Contract, OutputBinding, Selector};
use streamgate::spec::{OnnxSpec, OutputType, TensorDatatype, TensorLayout};

fn load() -> OnnxBackend {
    let spec = OnnxSpec {
        repository: "models".into(),
        model_name: None,
        layout: TensorLayout::Matrix {
            name: "features".into(),
            datatype: TensorDatatype::Fp32,
        },
    };
    OnnxBackend::load(&spec, "fraud", "1", Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn contract() -> Contract {
    Contract {
        inputs: (0..6).map(|i| format!("f{i}")).collect(),
        outputs: vec![OutputBinding {
            column: "fraud_score".into(),
            selector: Selector::Tensor {
                name: "fraud_score".into(),
                index: None,
            },
            data_type: OutputType::Float64,
        }],
    }
}

#[test]
fn shipped_model_matches_onnxruntime_reference_scores() {
    let model = load();
    assert_eq!(model.inputs()[0].name, "features");
    assert_eq!(model.outputs()[0].name, "fraud_score");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fraud/reference.jsonl"),
    )
    .unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1000);
    let columns: Vec<(String, ArrayRef)> = (0..6)
        .map(|i| {
            let values: Vec<f32> = rows
                .iter()
                .map(|r| r["features"][i].as_f64().unwrap() as f32)
                .collect();
            (
                format!("f{i}"),
                Arc::new(Float32Array::from(values)) as ArrayRef,
            )
        })
        .collect();
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let out = model.run(&batch, &contract()).unwrap();
    let scores = out.columns[0].as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    let mut worst = 0f64;
    for (i, row) in rows.iter().enumerate() {
        let expected = row["fraud_score"].as_f64().unwrap();
        worst = worst.max((scores.value(i) - expected).abs());
    }
    eprintln!("largest difference from onnxruntime: {worst:e}");
    assert!(worst < 1e-5, "tract differs from onnxruntime by {worst}");
}

#[test]
fn a_step_that_does_not_fit_the_model_is_refused_naming_both_sides() {
    let model = load();
    let mut c = contract();
    c.inputs.truncate(5);
    let err = model.check(&c).unwrap_err().to_string();
    assert!(
        err.contains("sends 5 columns (f0, f1, f2, f3, f4) but model input `features` has shape"),
        "{err}"
    );
    let mut c = contract();
    c.outputs[0].selector = Selector::Tensor {
        name: "label".into(),
        index: None,
    };
    let err = model.check(&c).unwrap_err().to_string();
    assert!(
        err.contains("reads `label` but the model's outputs are: fraud_score"),
        "{err}"
    );
    assert!(model.check(&contract()).is_ok());
}

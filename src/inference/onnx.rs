//! In-process ONNX models with tract (pure Rust, no network hop): a version whose runtime is a
//! model file in a Triton-style repository, `<repository>/<model>/<version>/model.onnx`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float32Array, Float64Array, Int64Array};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, Float32Type, Float64Type, Int32Type, Int64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use futures::FutureExt;
use futures::future::BoxFuture;
use tract_onnx::prelude::*;

use super::error::{ErrorKind, InferError};
use super::protocol::json_values::cast_for_tensor;
use super::protocol::{Backend, CallOutput, Contract, Selector, SelectorSyntax};
use crate::spec::{OnnxSpec, OutputType, TensorDatatype, TensorLayout};

/// A loaded, optimised ONNX model.
pub struct OnnxBackend {
    plan: Arc<TypedRunnableModel>,
    path: PathBuf,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    layout: TensorLayout,
}

/// A declared tensor: name, element type and shape (`None` for a symbolic dimension).
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type as tract names it.
    pub datum_type: DatumType,
    /// Dimensions; `None` where symbolic (the batch).
    pub shape: Vec<Option<i64>>,
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("ONNX model {path}: {message}")]
pub struct OnnxLoadError {
    /// The model file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// Path of `model`/`version` in a repository.
pub fn model_path(repository: &Path, model: &str, version: &str) -> PathBuf {
    repository.join(model).join(version).join("model.onnx")
}

impl OnnxBackend {
    /// Loads and optimises the model of `spec` for `model`/`version`, with paths relative to
    /// `base_dir`.
    pub fn load(
        spec: &OnnxSpec,
        registry_name: &str,
        version: &str,
        base_dir: &Path,
    ) -> Result<Self, OnnxLoadError> {
        let model = spec.model_name.as_deref().unwrap_or(registry_name);
        let path = model_path(&base_dir.join(&spec.repository), model, version);
        let err = |message: String| OnnxLoadError {
            path: path.display().to_string(),
            message,
        };
        if !path.is_file() {
            return Err(err("no such file (expected the Triton layout <repository>/<model>/<version>/model.onnx)".into()));
        }
        let typed = tract_onnx::onnx()
            .model_for_path(&path)
            .and_then(|m| m.into_typed())
            .map_err(|e| err(format!("cannot load: {e:#}")))?;
        let describe = |outlets: &[OutletId]| -> Result<Vec<TensorInfo>, OnnxLoadError> {
            outlets
                .iter()
                .map(|o| {
                    let fact = typed.outlet_fact(*o).map_err(|e| err(e.to_string()))?;
                    let name = typed
                        .outlet_label(*o)
                        .unwrap_or(&typed.node(o.node).name)
                        .to_string();
                    Ok(TensorInfo {
                        name,
                        datum_type: fact.datum_type,
                        shape: fact.shape.iter().map(|d| d.as_i64()).collect(),
                    })
                })
                .collect()
        };
        let inputs = describe(typed.input_outlets().map_err(|e| err(e.to_string()))?)?;
        let outputs = describe(typed.output_outlets().map_err(|e| err(e.to_string()))?)?;
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| err(format!("cannot optimise: {e:#}")))?;
        Ok(OnnxBackend {
            plan,
            path,
            inputs,
            outputs,
            layout: spec.layout.clone(),
        })
    }

    /// Declared inputs.
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    /// Declared outputs.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// Checks the model's declared inputs against what the step sends.
    pub fn check(&self, contract: &Contract) -> Result<(), String> {
        let declared = |t: &[TensorInfo]| {
            t.iter()
                .map(|t| format!("{} {:?} {:?}", t.name, t.datum_type, t.shape))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let width = contract.inputs.len() as i64;
        match &self.layout {
            TensorLayout::Matrix { name, .. } => {
                let [input] = self.inputs.as_slice() else {
                    return Err(format!(
                        "layout `matrix` sends one tensor but the model has {} inputs ({})",
                        self.inputs.len(),
                        declared(&self.inputs)
                    ));
                };
                if name != "input" && *name != input.name {
                    return Err(format!(
                        "the step sends tensor `{name}` but the model's input is `{}`",
                        input.name
                    ));
                }
                match input.shape.as_slice() {
                    [_, Some(f)] if *f != width => {
                        return Err(format!(
                            "the step sends {width} columns ({}) but model input `{}` has shape {:?}",
                            contract.inputs.join(", "),
                            input.name,
                            input.shape
                        ));
                    }
                    [_, _] => {}
                    other => {
                        return Err(format!(
                            "layout `matrix` needs a 2-D input but `{}` has shape {other:?}",
                            input.name
                        ));
                    }
                }
                datatype_of(input.datum_type)?;
            }
            TensorLayout::Columns => {
                // Inputs are matched by name, like OIP v2's columns layout: a swapped order
                // must not silently swap features.
                if self.inputs.len() != contract.inputs.len() {
                    return Err(format!(
                        "the step sends {} columns ({}) but the model has {} inputs ({})",
                        contract.inputs.len(),
                        contract.inputs.join(", "),
                        self.inputs.len(),
                        declared(&self.inputs)
                    ));
                }
                for t in &self.inputs {
                    if !contract.inputs.contains(&t.name) {
                        return Err(format!(
                            "model input `{}` is not among the step's inputs ({}); name the columns like the model's inputs ({})",
                            t.name,
                            contract.inputs.join(", "),
                            declared(&self.inputs)
                        ));
                    }
                    datatype_of(t.datum_type)?;
                    let per_row: i64 = t.shape.iter().skip(1).map(|d| d.unwrap_or(1)).product();
                    if t.shape.len() > 2 || per_row != 1 {
                        return Err(format!(
                            "layout `columns` sends `{}` as [N] or [N, 1], but the model expects shape {:?}",
                            t.name, t.shape
                        ));
                    }
                }
            }
        }
        for binding in &contract.outputs {
            let Selector::Tensor { name, .. } = &binding.selector else {
                continue;
            };
            match self.outputs.iter().find(|o| &o.name == name) {
                None => {
                    return Err(format!(
                        "output `{}` reads `{name}` but the model's outputs are: {}",
                        binding.column,
                        declared(&self.outputs)
                    ));
                }
                Some(o)
                    if !matches!(
                        o.datum_type,
                        DatumType::F32 | DatumType::F64 | DatumType::I64
                    ) =>
                {
                    return Err(format!(
                        "model output `{name}` is {:?}; numeric outputs (F32, F64, I64) are supported",
                        o.datum_type
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Runs the model on `inputs` (blocking; call from a blocking thread).
    pub fn run(&self, inputs: &RecordBatch, contract: &Contract) -> Result<CallOutput, InferError> {
        let n = inputs.num_rows();
        let bad = |m: String| InferError::new(ErrorKind::BadInput, m);
        let runtime = |e: anyhow::Error| InferError::new(ErrorKind::Runtime, format!("{e:#}"));
        let tensors: TVec<TValue> = match &self.layout {
            TensorLayout::Matrix { .. } => {
                let info = &self.inputs[0];
                let datatype = datatype_of(info.datum_type).map_err(bad)?;
                let columns: Vec<ArrayRef> = inputs
                    .columns()
                    .iter()
                    .map(|c| cast_for_tensor(c, datatype))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?;
                tvec![
                    matrix(&columns, n, info.datum_type)
                        .map_err(runtime)?
                        .into()
                ]
            }
            TensorLayout::Columns => self
                .inputs
                .iter()
                .map(|info| {
                    // `check` made sure every model input is one of the step's inputs.
                    let position = contract
                        .inputs
                        .iter()
                        .position(|c| *c == info.name)
                        .ok_or_else(|| bad(format!("no column for model input `{}`", info.name)))?;
                    let column = inputs.column(position);
                    let column =
                        cast_for_tensor(column, datatype_of(info.datum_type).map_err(bad)?)
                            .map_err(bad)?;
                    let shape: Vec<usize> = if info.shape.len() == 2 {
                        vec![n, 1]
                    } else {
                        vec![n]
                    };
                    matrix(&[column], n, info.datum_type)
                        .and_then(|t| t.into_shape(&shape))
                        .map(TValue::from)
                        .map_err(runtime)
                })
                .collect::<Result<_, _>>()?,
        };
        self.fits(&tensors, contract)?;
        let results = self.plan.run(tensors).map_err(runtime)?;
        let mut columns = Vec::with_capacity(contract.outputs.len());
        for binding in &contract.outputs {
            let Selector::Tensor { name, index } = &binding.selector else {
                return Err(InferError::contract("ONNX outputs use tensor selectors"));
            };
            let position = self
                .outputs
                .iter()
                .position(|o| &o.name == name)
                .ok_or_else(|| InferError::contract(format!("the model has no output `{name}`")))?;
            columns.push(select(
                &results[position],
                name,
                *index,
                n,
                binding.data_type,
            )?);
        }
        Ok(CallOutput::columns(columns))
    }

    /// Refuses input tensors whose shape the model does not declare (a request with the
    /// wrong number of columns, or a fixed batch size it does not have). tract would refuse
    /// them too, but as an internal error; this is the caller's mistake, so it is
    /// [`ErrorKind::Rejected`] (HTTP 400 at the gateway, dead-lettered rows in a pipeline)
    /// with both shapes named.
    fn fits(&self, tensors: &[TValue], contract: &Contract) -> Result<(), InferError> {
        for (info, tensor) in self.inputs.iter().zip(tensors) {
            let actual = tensor.shape();
            let fits =
                actual.len() == info.shape.len()
                    && info.shape.iter().zip(actual).all(|(declared, got)| {
                        declared.is_none_or(|d| i64::try_from(*got) == Ok(d))
                    });
            if fits {
                continue;
            }
            let sent = match &self.layout {
                TensorLayout::Matrix { .. } => format!(
                    "{} columns: {}",
                    contract.inputs.len(),
                    contract.inputs.join(", ")
                ),
                TensorLayout::Columns => format!("column `{}`", info.name),
            };
            let message = format!(
                "model input `{}` expects shape {} but was given shape {actual:?} ({sent})",
                info.name,
                shape_text(&info.shape),
            );
            // Thousands of column names would make an unbounded message.
            return Err(InferError::new(
                ErrorKind::Rejected,
                crate::codec::truncate_message(&message, MAX_MESSAGE),
            ));
        }
        Ok(())
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Longest shape-mismatch message: both shapes and the first column names, bounded for HTTP
/// answers and dead-letter headers.
const MAX_MESSAGE: usize = 400;

/// A declared shape as people write it: `[N, 6]`, symbolic dimensions as `N` (the batch) or
/// `?`.
fn shape_text(shape: &[Option<i64>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Some(d) => d.to_string(),
            None if i == 0 => "N".to_string(),
            None => "?".to_string(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

fn datatype_of(dt: DatumType) -> Result<TensorDatatype, String> {
    match dt {
        DatumType::F32 => Ok(TensorDatatype::Fp32),
        DatumType::F64 => Ok(TensorDatatype::Fp64),
        DatumType::I32 => Ok(TensorDatatype::Int32),
        DatumType::I64 => Ok(TensorDatatype::Int64),
        other => Err(format!(
            "model inputs of type {other:?} are not supported (FP32, FP64, INT32, INT64 are)"
        )),
    }
}

/// Row-major `[n, columns]` tensor of already cast columns.
fn matrix(columns: &[ArrayRef], n: usize, dt: DatumType) -> anyhow::Result<Tensor> {
    /// Interleaves the columns' value buffers row by row. Each column is downcast once, not
    /// once per value (per value, that was a tenth of a backfill's ONNX step).
    fn gather<T: ArrowPrimitiveType>(columns: &[ArrayRef], n: usize) -> anyhow::Result<Tensor>
    where
        T::Native: Datum,
    {
        let f = columns.len();
        let mut data = vec![T::Native::default(); n * f];
        for (c, column) in columns.iter().enumerate() {
            let values = column
                .as_primitive_opt::<T>()
                .ok_or_else(|| {
                    anyhow::anyhow!("column {c} is {}, not {}", column.data_type(), T::DATA_TYPE)
                })?
                .values();
            for (row, value) in data.chunks_exact_mut(f.max(1)).zip(values.iter()) {
                row[c] = *value;
            }
        }
        Ok(tract_ndarray::Array2::from_shape_vec((n, f), data)?.into_tensor())
    }
    match dt {
        DatumType::F32 => gather::<Float32Type>(columns, n),
        DatumType::F64 => gather::<Float64Type>(columns, n),
        DatumType::I32 => gather::<Int32Type>(columns, n),
        _ => gather::<Int64Type>(columns, n),
    }
}

fn select(
    value: &TValue,
    name: &str,
    index: Option<usize>,
    rows: usize,
    ty: OutputType,
) -> Result<ArrayRef, InferError> {
    let shape = value.shape();
    if shape.first() != Some(&rows) {
        return Err(InferError::contract(format!(
            "output `{name}` has shape {shape:?} for {rows} rows"
        )));
    }
    let per_row: usize = shape.iter().skip(1).product();
    let pick = match index {
        None if per_row == 1 => 0,
        None => {
            return Err(InferError::contract(format!(
                "output `{name}` has {per_row} values per row; select one with `{name}[i]`"
            )));
        }
        Some(i) if i < per_row => i,
        Some(i) => {
            return Err(InferError::contract(format!(
                "`{name}[{i}]` is out of range: the output has {per_row} values per row"
            )));
        }
    };
    let as_f64: Vec<f64> = match value.datum_type() {
        DatumType::F32 => value
            .to_plain_array_view::<f32>()
            .map(|a| a.iter().map(|v| *v as f64).collect()),
        DatumType::F64 => value
            .to_plain_array_view::<f64>()
            .map(|a| a.iter().copied().collect()),
        DatumType::I64 => value
            .to_plain_array_view::<i64>()
            .map(|a| a.iter().map(|v| *v as f64).collect()),
        other => {
            return Err(InferError::contract(format!(
                "output `{name}` has unsupported type {other:?}"
            )));
        }
    }
    .map_err(|e| InferError::new(ErrorKind::Runtime, e.to_string()))?;
    let picked = (0..rows).map(|r| as_f64[r * per_row + pick]);
    Ok(match ty {
        OutputType::Float32 => Arc::new(Float32Array::from_iter_values(picked.map(|v| v as f32))),
        OutputType::Float64 => Arc::new(Float64Array::from_iter_values(picked)),
        OutputType::Int64 => Arc::new(Int64Array::from_iter_values(picked.map(|v| v as i64))),
        OutputType::Boolean => Arc::new(datafusion::arrow::array::BooleanArray::from(
            picked.map(|v| v != 0.0).collect::<Vec<_>>(),
        )),
        other => {
            return Err(InferError::contract(format!(
                "output `{name}` is numeric and cannot be a {other:?} column"
            )));
        }
    })
}

/// Runs the model on a blocking thread so the async workers keep moving, at most one run per
/// core at a time: a run keeps going after its caller timed out, so the permit travels with
/// the run, not with the caller.
pub struct OnnxRunner {
    model: Arc<OnnxBackend>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl OnnxRunner {
    /// A runner of `model`.
    pub fn new(model: Arc<OnnxBackend>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        OnnxRunner {
            model,
            slots: Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }
}

impl Backend for OnnxRunner {
    fn call<'a>(
        &'a self,
        _replica: &'a str,
        inputs: &'a RecordBatch,
        contract: &'a Contract,
    ) -> BoxFuture<'a, Result<CallOutput, InferError>> {
        let backend = self.model.clone();
        let inputs = inputs.clone();
        let contract = contract.clone();
        let slots = self.slots.clone();
        async move {
            let permit = slots
                .acquire_owned()
                .await
                .map_err(|e| InferError::new(ErrorKind::Runtime, e.to_string()))?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                backend.run(&inputs, &contract)
            })
            .await
            .unwrap_or_else(|e| Err(InferError::new(ErrorKind::Runtime, e.to_string())))
        }
        .boxed()
    }

    fn selector_syntax(&self) -> SelectorSyntax {
        SelectorSyntax::Tensor
    }
}

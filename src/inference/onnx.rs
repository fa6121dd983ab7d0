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

/// A model input element type the runtime cannot feed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model inputs of type {0:?} are not supported (FP32, FP64, INT32, INT64 are)")]
pub struct UnsupportedDatatype(pub DatumType);

/// How the model's declared tensors do not fit what the step sends and reads.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OnnxContractError {
    /// Layout `matrix` with a model of several inputs.
    #[error(
        "layout `matrix` sends one tensor but the model has {} inputs ({})",
        .model_inputs.len(),
        declared(.model_inputs)
    )]
    MatrixInputs {
        /// The model's inputs.
        model_inputs: Vec<TensorInfo>,
    },
    /// Layout `matrix` naming a tensor that is not the model's input.
    #[error("the step sends tensor `{name}` but the model's input is `{input}`")]
    TensorName {
        /// The tensor the layout names.
        name: String,
        /// The model's input.
        input: String,
    },
    /// Layout `matrix` with a model input of another width.
    #[error(
        "the step sends {} columns ({}) but model input `{input}` has shape {shape:?}",
        .columns.len(),
        .columns.join(", ")
    )]
    Width {
        /// The step's inputs.
        columns: Vec<String>,
        /// The model's input.
        input: String,
        /// Its shape.
        shape: Vec<Option<i64>>,
    },
    /// Layout `matrix` with a model input that is not 2-D.
    #[error("layout `matrix` needs a 2-D input but `{input}` has shape {shape:?}")]
    NotTwoDimensional {
        /// The model's input.
        input: String,
        /// Its shape.
        shape: Vec<Option<i64>>,
    },
    /// A model input of a type the runtime cannot feed.
    #[error(transparent)]
    Datatype(#[from] UnsupportedDatatype),
    /// Layout `columns` with as many columns as model inputs.
    #[error(
        "the step sends {} columns ({}) but the model has {} inputs ({})",
        .columns.len(),
        .columns.join(", "),
        .model_inputs.len(),
        declared(.model_inputs)
    )]
    InputCount {
        /// The step's inputs.
        columns: Vec<String>,
        /// The model's inputs.
        model_inputs: Vec<TensorInfo>,
    },
    /// Layout `columns` with a model input no column is named after.
    #[error(
        "model input `{input}` is not among the step's inputs ({}); name the columns like the model's inputs ({})",
        .columns.join(", "),
        declared(.model_inputs)
    )]
    NoColumn {
        /// The model's input.
        input: String,
        /// The step's inputs.
        columns: Vec<String>,
        /// The model's inputs.
        model_inputs: Vec<TensorInfo>,
    },
    /// Layout `columns` with a model input that is not `[N]` or `[N, 1]`.
    #[error(
        "layout `columns` sends `{input}` as [N] or [N, 1], but the model expects shape {shape:?}"
    )]
    ColumnShape {
        /// The model's input.
        input: String,
        /// Its shape.
        shape: Vec<Option<i64>>,
    },
    /// An output reads a tensor the model does not have.
    #[error("output `{column}` reads `{tensor}` but the model's outputs are: {}", declared(.model_outputs))]
    NoOutput {
        /// The output column.
        column: String,
        /// The tensor it reads.
        tensor: String,
        /// The model's outputs.
        model_outputs: Vec<TensorInfo>,
    },
    /// An output tensor that is not numeric.
    #[error(
        "model output `{name}` is {datum_type:?}; numeric outputs (F32, F64, I64) are supported"
    )]
    OutputType {
        /// The tensor.
        name: String,
        /// Its element type.
        datum_type: DatumType,
    },
}

/// `name type shape` of each tensor.
fn declared(tensors: &[TensorInfo]) -> String {
    tensors
        .iter()
        .map(|t| format!("{} {:?} {:?}", t.name, t.datum_type, t.shape))
        .collect::<Vec<_>>()
        .join(", ")
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
    pub fn check(&self, contract: &Contract) -> Result<(), OnnxContractError> {
        let width = contract.inputs.len() as i64;
        match &self.layout {
            TensorLayout::Matrix { name, .. } => {
                let [input] = self.inputs.as_slice() else {
                    return Err(OnnxContractError::MatrixInputs {
                        model_inputs: self.inputs.clone(),
                    });
                };
                if name != "input" && *name != input.name {
                    return Err(OnnxContractError::TensorName {
                        name: name.clone(),
                        input: input.name.clone(),
                    });
                }
                match input.shape.as_slice() {
                    [_, Some(f)] if *f != width => {
                        return Err(OnnxContractError::Width {
                            columns: contract.inputs.clone(),
                            input: input.name.clone(),
                            shape: input.shape.clone(),
                        });
                    }
                    [_, _] => {}
                    _ => {
                        return Err(OnnxContractError::NotTwoDimensional {
                            input: input.name.clone(),
                            shape: input.shape.clone(),
                        });
                    }
                }
                datatype_of(input.datum_type)?;
            }
            TensorLayout::Columns => {
                // Inputs are matched by name, like OIP v2's columns layout: a swapped order
                // must not silently swap features.
                if self.inputs.len() != contract.inputs.len() {
                    return Err(OnnxContractError::InputCount {
                        columns: contract.inputs.clone(),
                        model_inputs: self.inputs.clone(),
                    });
                }
                for t in &self.inputs {
                    if !contract.inputs.contains(&t.name) {
                        return Err(OnnxContractError::NoColumn {
                            input: t.name.clone(),
                            columns: contract.inputs.clone(),
                            model_inputs: self.inputs.clone(),
                        });
                    }
                    datatype_of(t.datum_type)?;
                    let per_row: i64 = t.shape.iter().skip(1).map(|d| d.unwrap_or(1)).product();
                    if t.shape.len() > 2 || per_row != 1 {
                        return Err(OnnxContractError::ColumnShape {
                            input: t.name.clone(),
                            shape: t.shape.clone(),
                        });
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
                    return Err(OnnxContractError::NoOutput {
                        column: binding.column.clone(),
                        tensor: name.clone(),
                        model_outputs: self.outputs.clone(),
                    });
                }
                Some(o)
                    if !matches!(
                        o.datum_type,
                        DatumType::F32 | DatumType::F64 | DatumType::I64
                    ) =>
                {
                    return Err(OnnxContractError::OutputType {
                        name: name.clone(),
                        datum_type: o.datum_type,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Runs the model on `inputs` (blocking; call from a blocking thread).
    pub fn run(&self, inputs: &RecordBatch, contract: &Contract) -> Result<CallOutput, InferError> {
        let n = inputs.num_rows();
        let bad = |m: &dyn std::fmt::Display| InferError::new(ErrorKind::BadInput, m.to_string());
        let runtime = |e: anyhow::Error| InferError::new(ErrorKind::Runtime, format!("{e:#}"));
        let tensors: TVec<TValue> = match &self.layout {
            TensorLayout::Matrix { .. } => {
                let info = &self.inputs[0];
                let datatype = datatype_of(info.datum_type).map_err(|e| bad(&e))?;
                let columns: Vec<ArrayRef> = inputs
                    .columns()
                    .iter()
                    .map(|c| cast_for_tensor(c, datatype))
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?;
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
                        .ok_or_else(|| {
                            bad(&format!("no column for model input `{}`", info.name))
                        })?;
                    let column = inputs.column(position);
                    let datatype = datatype_of(info.datum_type).map_err(|e| bad(&e))?;
                    let column = cast_for_tensor(column, datatype).map_err(|e| bad(&e))?;
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

fn datatype_of(dt: DatumType) -> Result<TensorDatatype, UnsupportedDatatype> {
    match dt {
        DatumType::F32 => Ok(TensorDatatype::Fp32),
        DatumType::F64 => Ok(TensorDatatype::Fp64),
        DatumType::I32 => Ok(TensorDatatype::Int32),
        DatumType::I64 => Ok(TensorDatatype::Int64),
        other => Err(UnsupportedDatatype(other)),
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

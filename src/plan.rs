//! Compiles a validated pipeline into what runs: the record schema, the JSON decoder, the SQL
//! plan (planned once, here) and the output filters. Everything that can be checked without a
//! broker is checked here, so `streamgate validate` catches wrong column names, bad SQL,
//! unknown key columns, inference inputs and outputs that do not fit, and in-process models
//! that do not accept what is sent, before anything starts.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use crate::codec::Decoder;
use crate::codec::avro::AvroDecoder;
use crate::codec::json::JsonDecoder;
use crate::codec::metadata::input_table_schema;
use crate::codec::schema::{column_list, load_record_schema};
use crate::inference::registry::{self, PreparedBackends};
use crate::inference::step::{CompiledStep, compile_steps};
use crate::inference::{OnlineProblem, check_online};
use crate::sink::PayloadColumns;
use crate::spec::{FormatSpec, LoadedPipeline, SinkSpec, SpecError, SpecErrors};
use crate::transform::route::RowFilter;
use crate::transform::sql::SqlTransform;

/// One compiled output.
pub struct CompiledOutput {
    /// Output name.
    pub name: String,
    /// Compiled `where`, if any.
    pub filter: Option<RowFilter>,
    /// The columns its payloads carry (`columns` / `exclude_columns`).
    pub payload: PayloadColumns,
}

/// A pipeline ready to be built into a runtime.
pub struct CompiledPipeline {
    /// The validated spec and its file.
    pub pipeline: LoadedPipeline,
    /// Schema of decoded records (without metadata columns).
    pub record_schema: SchemaRef,
    /// Decoder of payloads into the SQL input table.
    pub decoder: Decoder,
    /// The SQL stage.
    pub sql: SqlTransform,
    /// Protocol backends of every model version (in-process models loaded).
    pub models: PreparedBackends,
    /// Inference steps, in spec order.
    pub steps: Vec<CompiledStep>,
    /// Schema of rows after inference (the SQL output plus the steps' columns).
    pub output_schema: SchemaRef,
    /// Outputs in spec order.
    pub outputs: Vec<CompiledOutput>,
}

impl CompiledPipeline {
    /// Schema of the rows the outputs receive.
    pub fn output_schema(&self) -> SchemaRef {
        self.output_schema.clone()
    }

    /// Checks served models' metadata against the inference steps (network).
    pub async fn check_models_online(&self) -> Vec<OnlineProblem> {
        check_online(
            &self.steps,
            &self.pipeline.spec.models,
            &self.models,
            &self.sql.output_schema(),
        )
        .await
    }
}

/// Compiles a loaded pipeline, collecting every problem with its path.
pub async fn compile(pipeline: LoadedPipeline) -> Result<Arc<CompiledPipeline>, SpecErrors> {
    let file = pipeline.file.clone();
    let err = |path: &str, msg: String| SpecError::at(&file, path, msg);
    let format_err = |e: String| SpecErrors(vec![err("format", e)]);
    let (record_schema, decoder) = match &pipeline.spec.format {
        FormatSpec::Json(format) => {
            let record_schema = load_record_schema(format, pipeline.base_dir())
                .map_err(|e| format_err(e.to_string()))?;
            let decoder = JsonDecoder::try_new(record_schema.clone())
                .map_err(|e| format_err(e.to_string()))?;
            (record_schema, Decoder::Json(decoder))
        }
        FormatSpec::Avro(format) => {
            let path = pipeline.base_dir().join(&format.schema);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format_err(format!("{}: {e}", path.display())))?;
            let record_schema = crate::codec::schema::load_record_schema(
                &crate::spec::JsonFormatSpec {
                    schema: Some(format.schema.clone()),
                    columns: None,
                },
                pipeline.base_dir(),
            )
            .map_err(|e| format_err(e.to_string()))?;
            let reader = apache_avro::Schema::parse_str(&text)
                .map_err(|e| format_err(format!("{}: {e}", path.display())))?;
            let json = JsonDecoder::try_new(record_schema.clone())
                .map_err(|e| format_err(e.to_string()))?;
            let decoder = AvroDecoder::new(json, reader, format.wire, format.registry.as_ref());
            (record_schema, Decoder::Avro(Box::new(decoder)))
        }
    };
    let table = input_table_schema(&record_schema);
    let sql = SqlTransform::new(pipeline.spec.sql.as_deref(), table)
        .await
        .map_err(|e| SpecErrors(vec![err("sql", e.to_string())]))?;
    let spec = &pipeline.spec;
    let to_errors = |list: Vec<(String, String)>| {
        SpecErrors(list.into_iter().map(|(p, m)| err(&p, m)).collect())
    };
    let models = registry::prepare(&spec.models, pipeline.base_dir()).map_err(to_errors)?;
    let (steps, out_schema) =
        compile_steps(&spec.inference, &spec.models, &models, &sql.output_schema())
            .map_err(to_errors)?;

    let mut errors = Vec::new();
    let mut outputs = Vec::new();
    for (i, output) in pipeline.spec.outputs.iter().enumerate() {
        let filter = match &output.filter {
            Some(expr) => match RowFilter::new(expr, out_schema.clone()) {
                Ok(f) => Some(f),
                Err(e) => {
                    errors.push(err(&format!("outputs[{i}].where"), e.to_string()));
                    None
                }
            },
            None => None,
        };
        let payload = match PayloadColumns::resolve(
            output.columns.as_deref(),
            &output.exclude_columns,
            &out_schema,
        ) {
            Ok(payload) => payload,
            Err(list) => {
                for (field, message) in list {
                    errors.push(err(&format!("outputs[{i}].{field}"), message));
                }
                PayloadColumns::all()
            }
        };
        check_sink_columns(
            &output.sink,
            &out_schema,
            &payload,
            &format!("outputs[{i}].sink"),
            &mut |p, m| errors.push(err(&p, m)),
        );
        outputs.push(CompiledOutput {
            name: output.name.clone(),
            filter,
            payload,
        });
    }
    if !errors.is_empty() {
        return Err(SpecErrors(errors));
    }
    Ok(Arc::new(CompiledPipeline {
        pipeline,
        record_schema,
        decoder,
        sql,
        models,
        steps,
        output_schema: out_schema,
        outputs,
    }))
}

/// Checks the columns a sink reads: its Avro schema against the payload columns, its key,
/// headers and subject against every column of the output rows.
fn check_sink_columns(
    sink: &SinkSpec,
    schema: &SchemaRef,
    payload: &PayloadColumns,
    path: &str,
    report: &mut dyn FnMut(String, String),
) {
    let format = match sink {
        SinkSpec::Kafka(k) => Some(&k.format),
        SinkSpec::Nats(n) => Some(&n.format),
        SinkSpec::Stdout(_) | SinkSpec::File(_) => None,
    };
    if let Some(crate::spec::SinkFormatSpec::Avro(avro)) = format {
        // The resolved projection always fits the schema it was resolved against.
        let payload_schema = payload.schema(schema).unwrap_or_else(|_| schema.clone());
        let schema = &payload_schema;
        if let Err(e) = crate::codec::avro_encode::writer_schema(
            schema,
            avro.name.as_deref().unwrap_or("row"),
            &avro.namespace,
        ) {
            report(format!("{path}.format"), e.to_string());
        }
        if let Some(file) = &avro.schema {
            match crate::sink::encode::read_schema(file) {
                Err(e) => report(format!("{path}.format.schema"), e.to_string()),
                Ok(user) => {
                    for field in user["fields"].as_array().into_iter().flatten() {
                        let name = field["name"].as_str().unwrap_or_default();
                        if field.get("default").is_none() && schema.field_with_name(name).is_err() {
                            report(
                                format!("{path}.format.schema"),
                                format!(
                                    "field `{name}` has no default and no column of that name \
                                     (columns: {})",
                                    column_list(schema)
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
    let mut check = |field: String, column: &str| {
        if schema.field_with_name(column).is_err() {
            report(
                field,
                format!(
                    "column `{column}` is not in the SQL output (columns: {})",
                    column_list(schema)
                ),
            );
        }
    };
    match sink {
        SinkSpec::Kafka(k) => {
            if let Some(key) = &k.key {
                check(format!("{path}.key"), key);
            }
            for (header, column) in &k.headers {
                check(format!("{path}.headers.{header}"), column);
            }
        }
        SinkSpec::Nats(n) => {
            if let Ok(template) = crate::spec::subject::SubjectTemplate::parse(&n.subject) {
                for column in template.columns() {
                    check(format!("{path}.subject"), column);
                }
            }
            for (header, column) in &n.headers {
                check(format!("{path}.headers.{header}"), column);
            }
        }
        SinkSpec::Stdout(_) | SinkSpec::File(_) => {}
    }
}

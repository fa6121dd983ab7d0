//! Why an Open Inference Protocol v2 request cannot be decoded (the client's fault: 400) or a
//! response cannot be encoded, as `oip_codec` reports them.

use datafusion::arrow::datatypes::DataType;

/// A request body nesting arrays and objects too deep.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the JSON body nests arrays and objects deeper than {max} levels (at byte {at})")]
pub struct TooDeep {
    /// The limit.
    pub max: usize,
    /// Where the body goes past it.
    pub at: usize,
}

/// Why a request cannot be decoded: always the client's fault (400).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The binary header length is past the body.
    #[error("Inference-Header-Content-Length is {declared} but the body has {body} bytes")]
    HeaderLength {
        /// The header's value.
        declared: usize,
        /// The body's length.
        body: usize,
    },
    /// The JSON part nests too deep.
    #[error(transparent)]
    TooDeep(#[from] TooDeep),
    /// The JSON part is not an inference request.
    #[error("not an OIP v2 inference request: {0}")]
    NotARequest(#[source] serde_json::Error),
    /// No input tensors.
    #[error("the request has no inputs")]
    NoInputs,
    /// The inputs' shapes declare more values than the codec takes.
    #[error("the request declares more than {max} values")]
    TooManyValues {
        /// The most a request may declare.
        max: usize,
    },
    /// Two inputs disagree on the number of rows.
    #[error(
        "input `{input}` has {rows} rows but an earlier input has {earlier}: every input needs the same first dimension"
    )]
    RowsDiffer {
        /// The input.
        input: String,
        /// Its rows.
        rows: usize,
        /// An earlier input's rows.
        earlier: usize,
    },
    /// A JSON input has no data.
    #[error("input `{0}` has neither data nor binary_data_size")]
    NoData(String),
    /// A JSON input's data does not fill its shape.
    #[error("input `{input}` has shape {shape:?} ({declared} values) but {found} values of data")]
    DataLength {
        /// The input.
        input: String,
        /// Its shape.
        shape: Vec<i64>,
        /// Values the shape declares.
        declared: usize,
        /// Values in the data.
        found: usize,
    },
    /// One input's tensor is wrong.
    #[error("input `{input}`: {source}")]
    Input {
        /// The input.
        input: String,
        /// What is wrong with it.
        #[source]
        source: TensorError,
    },
    /// Binary data left over after every input took its part.
    #[error("{0} bytes of binary data are not claimed by any input")]
    UnclaimedBinary(usize),
    /// The columns do not form a batch.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// What is wrong with one input tensor.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// The shape has no usable first dimension.
    #[error("shape {0:?} needs a first dimension of 0 or more")]
    NoRows(Vec<i64>),
    /// A further dimension is negative or zero (or their product overflows).
    #[error("shape {0:?} has a negative or zero dimension")]
    BadDimension(Vec<i64>),
    /// `binary_data_size` is not a size.
    #[error("binary_data_size is not a size")]
    BinarySizeNotASize,
    /// `binary_data_size` runs past the body.
    #[error("binary_data_size {0} is past the end of the body")]
    BinarySizePastEnd(usize),
    /// A JSON value is not of the declared datatype.
    #[error("value {index} is not a valid {datatype}")]
    InvalidValue {
        /// Position in the flattened data.
        index: usize,
        /// The declared datatype.
        datatype: String,
    },
    /// The datatype is not one the gateway translates.
    #[error("datatype {0} is not supported (BOOL, INT8..INT64, UINT8..UINT64, FP32, FP64, BYTES)")]
    Unsupported(String),
    /// A value is out of the declared datatype's range.
    #[error("a value does not fit {0}")]
    OutOfRange(String),
    /// Binary data of the wrong length for its values.
    #[error("{bytes} bytes of binary data for {count} {datatype} values")]
    BinaryLength {
        /// Bytes given.
        bytes: usize,
        /// Values declared.
        count: usize,
        /// The declared datatype.
        datatype: String,
    },
    /// A BYTES element's length runs past the data.
    #[error("BYTES element {0} runs past its binary data")]
    BytesElementTruncated(usize),
    /// A BYTES element is not UTF-8.
    #[error("BYTES element {0} is not UTF-8")]
    BytesElementNotUtf8(usize),
    /// Bytes left after the declared BYTES values.
    #[error("{left} bytes left after {count} BYTES values")]
    BytesLeftOver {
        /// Bytes left.
        left: usize,
        /// Values declared.
        count: usize,
    },
    /// The values do not fill the shape.
    #[error("{values} values for shape {shape:?}")]
    ValueCount {
        /// Values decoded.
        values: usize,
        /// The shape.
        shape: Vec<i64>,
    },
    /// A cast or column split failed.
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

/// Why an answer cannot be encoded: the model's fault (502).
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    /// An output value is null.
    #[error("output `{output}` is null for row {row}")]
    Null {
        /// The output tensor.
        output: String,
        /// The row.
        row: usize,
    },
    /// An output column's type has no OIP v2 datatype.
    #[error("a {0} output cannot be an OIP v2 tensor")]
    Unsupported(DataType),
    /// The answer could not be serialized.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

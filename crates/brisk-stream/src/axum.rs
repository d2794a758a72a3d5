//! axum responses: an [`Encode`] stream is a streamed response with its content type, and an
//! [`Error`] is a response whose status says whose fault it was.
//!
//! ```
//! use axum::{Router, extract::Query, routing::get};
//! use brisk_stream::{Encode, Encoder, Error, Fields};
//! use futures_util::{Stream, StreamExt, stream};
//!
//! #[derive(serde::Serialize)]
//! struct Product { id: i64, name: String }
//! const OFFERED: &[&str] = &["id", "name"];
//!
//! #[derive(serde::Deserialize)]
//! struct Params { fields: Option<String> }
//!
//! fn products() -> impl Stream<Item = Result<Product, std::io::Error>> + Send + 'static {
//!     stream::iter((1..=3).map(|id| Ok(Product { id, name: format!("product {id}") })))
//! }
//!
//! // `GET /products.ndjson?fields=id`: an unknown field is a 400, the rows stream out.
//! async fn export(Query(params): Query<Params>) -> Result<Encode<impl Stream<Item = Result<Product, std::io::Error>>>, Error> {
//!     let fields = match params.fields {
//!         Some(list) => Fields::parse(&list, OFFERED)?,
//!         None => Fields::all(OFFERED),
//!     };
//!     Ok(Encoder::default().ndjson(products()).select(fields))
//! }
//!
//! let app: Router = Router::new().route("/products.ndjson", get(export));
//! ```

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use futures_core::TryStream;
use http::{HeaderValue, StatusCode, header::CONTENT_TYPE};
use serde::Serialize;

use crate::{
    encode::Encode,
    error::{BoxError, Error},
};

impl<S, T> IntoResponse for Encode<S>
where
    S: TryStream<Ok = T> + Send + 'static,
    S::Error: Into<BoxError>,
    T: Serialize + 'static,
{
    /// A `200 OK` whose body is the encoded stream, with its `Content-Type`. When the stream
    /// fails, hyper aborts the response (the connection closes without the final chunk), so
    /// the client sees an incomplete transfer.
    fn into_response(self) -> Response {
        let content_type = HeaderValue::from_static(self.content_type());
        let mut response = Response::new(Body::from_stream(self));
        response.headers_mut().insert(CONTENT_TYPE, content_type);
        response
    }
}

impl IntoResponse for Error {
    /// `400 Bad Request` for a client's mistake (a refused cursor, an unknown field), with the
    /// error's text (which never includes secrets or server details); `500 Internal Server
    /// Error` with a generic text otherwise.
    fn into_response(self) -> Response {
        if self.is_client_error() {
            (StatusCode::BAD_REQUEST, self.to_string()).into_response()
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

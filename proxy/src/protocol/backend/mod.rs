//! Server → client messages: encoders for what the proxy says itself (`encode`), and
//! lenient decoders for the few upstream messages the relay inspects (`decode`).

mod decode;
mod encode;

pub use decode::{
    parse_backend_key_data, parse_command_complete, parse_error_fields, parse_parameter_status,
    parse_ready_for_query, CommandTag, ErrorFields,
};
pub use encode::{
    authentication_ok, authentication_sasl, authentication_sasl_continue,
    authentication_sasl_final, backend_key_data, error_response, negotiate_protocol_version,
    notice_response, parameter_status, ready_for_query, MAX_ERROR_FIELD_LEN,
};

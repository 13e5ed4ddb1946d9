//! Server → client messages: encoders for what the proxy says itself (`encode`),
//! lenient decoders for the few upstream messages the relay inspects (`decode`), and the
//! whole-message decoder of the exchanges jitgate has with a server itself (`message`).

mod decode;
mod encode;
mod message;

pub use decode::{
    parse_command_complete, parse_error_fields, parse_ready_for_query, CommandTag, ErrorFields,
};
pub use encode::{
    authentication_ok, authentication_sasl, authentication_sasl_continue,
    authentication_sasl_final, backend_key_data, error_response, negotiate_protocol_version,
    notice_response, parameter_status, ready_for_query, MAX_ERROR_FIELD_LEN,
};
pub use message::{server_message, FullMessage};

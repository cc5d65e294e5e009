//! Arbitrary bytes to the SIP dip's parser, TCP framer and response builder: an answer or a
//! typed error, never a panic; every response is one well-formed header block; a frame never
//! claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::config::SipConfig;
use suppressd::server::sip::{self, Answer, Frame};

fuzz_target!(|data: &[u8]| {
    let source = "192.0.2.1:5060".parse().unwrap();
    let config = SipConfig::default();
    match sip::frame(data) {
        Frame::Skip(n) | Frame::Ping(n) | Frame::Message(n) | Frame::Unframeable(n, _) => {
            assert!(n <= data.len())
        }
        Frame::Incomplete | Frame::TooLarge => {}
    }
    match sip::parse_request(data) {
        Ok(request) => {
            let mut buffer = [0u8; 64];
            let number = sip::dialled_number(request.uri, &mut buffer);
            assert!(number.bytes().all(|b| b == b'+' || b.is_ascii_digit()));
            let _ = sip::destination(&request.echo.top_via, source);
            for answer in [
                Answer::Redirect,
                Answer::Unavailable,
                Answer::Options,
                Answer::NotAllowed,
            ] {
                let response = sip::respond(&request, &answer, &config, source);
                let text = std::str::from_utf8(&response).expect("responses are UTF-8");
                assert!(text.starts_with("SIP/2.0 "));
                assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
                assert_eq!(text.matches("\r\n\r\n").count(), 1, "one header block");
                // The response itself must parse as a message head (it is a response, so the
                // parser says so rather than failing elsewhere).
                assert_eq!(
                    sip::parse_request(&response).unwrap_err().kind,
                    sip::SipErrorKind::IsResponse
                );
            }
        }
        Err(error) => {
            let _ = error.to_string();
            if let Some(response) = sip::respond_bad_request(&error, &config, source) {
                assert!(response.starts_with(b"SIP/2.0 400 Bad Request\r\n"));
                assert!(response.ends_with(b"Content-Length: 0\r\n\r\n"));
            }
        }
    }
});

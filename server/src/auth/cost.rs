//! Measures what the server spends on one OPAQUE login (for the benchmark program): the
//! client's steps run untimed between the server's two timed steps.

use std::path::Path;
use std::time::{Duration, Instant};

use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, Identifiers, RegistrationResponse,
};
use rand::rngs::OsRng;

use super::opaque::{OpaqueServer, QpqSuite};

/// Average server time of LoginStart + LoginFinish over `logins` real logins, with a fresh
/// OPAQUE setup in `scratch` (a directory it may write).
pub fn measure_server_login_cost(scratch: &Path, logins: u32) -> Result<Duration, String> {
    let dir = scratch.join("login-cost");
    let server = OpaqueServer::load_or_create(&dir).map_err(|e| e.to_string())?;
    let password = b"measure";
    let ksf = argon2::Argon2::default();
    let start =
        ClientRegistration::<QpqSuite>::start(&mut OsRng, password).map_err(|e| e.to_string())?;
    let response = server
        .register_start("cost", &start.message.serialize())
        .map_err(|e| e.to_string())?;
    let response =
        RegistrationResponse::<QpqSuite>::deserialize(&response).map_err(|e| e.to_string())?;
    let finish = start
        .state
        .finish(
            &mut OsRng,
            password,
            response,
            ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
        )
        .map_err(|e| e.to_string())?;
    let file = server
        .register_finish(&finish.message.serialize())
        .map_err(|e| e.to_string())?;
    let mut spent = Duration::ZERO;
    for _ in 0..logins.max(1) {
        let client =
            ClientLogin::<QpqSuite>::start(&mut OsRng, password).map_err(|e| e.to_string())?;
        let request = client.message.serialize();
        let begun = Instant::now();
        let (id, response) = server
            .login_start("cost", Some(&file), &request)
            .map_err(|e| e.to_string())?;
        spent += begun.elapsed();
        let response =
            CredentialResponse::<QpqSuite>::deserialize(&response).map_err(|e| e.to_string())?;
        let finalization = client
            .state
            .finish(
                &mut OsRng,
                password,
                response,
                ClientLoginFinishParameters::new(None, Identifiers::default(), Some(&ksf)),
            )
            .map_err(|e| e.to_string())?
            .message
            .serialize();
        let begun = Instant::now();
        server
            .login_finish(&id, "cost", &finalization)
            .map_err(|e| e.to_string())?;
        spent += begun.elapsed();
    }
    Ok(spent / logins.max(1))
}

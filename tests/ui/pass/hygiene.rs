// Parameter names and types that a careless expansion would collide with.
#![allow(non_camel_case_types)]

/// A user type named like a generic parameter.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct T(pub u8);

/// Docs.
#[uds::service]
pub trait Svc {
    /// Several JSON arguments named like the expansion's locals.
    async fn locals(&self, ctx: &uds::Context, __data: u8, __args: u8, __imp: u8, __ctx: u8) -> u8;
    /// One argument named like a local.
    async fn one(&self, __out: u32) -> u32;
    /// The user's `T` in the signature, and an argument named `builder`.
    async fn typed(&self, builder: T) -> Result<T, String>;
}

struct Imp;

impl Svc for Imp {
    async fn locals(&self, _ctx: &uds::Context, __data: u8, __args: u8, __imp: u8, __ctx: u8) -> u8 {
        __data + __args + __imp + __ctx
    }
    async fn one(&self, __out: u32) -> u32 {
        __out
    }
    async fn typed(&self, builder: T) -> Result<T, String> {
        Ok(builder)
    }
}

fn main() {
    let _ = SvcServer::new(Imp);
    let _ = T(1).0;
}

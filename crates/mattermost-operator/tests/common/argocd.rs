//! Runs the Argo CD health checks of `deploy/argocd/resource_customizations` the way Argo CD
//! does: the object as a Lua table in the global `obj`, the script's returned table read as
//! `{status, message}`. Lua 5.1 (mlua, vendored), the dialect of Argo's gopher-lua.

use std::path::PathBuf;

use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaSerdeExt, Table};

/// Directory of the health check for `group/kind`.
pub fn dir(group: &str, kind: &str) -> PathBuf {
    testenv::repo_root()
        .join("deploy/argocd/resource_customizations")
        .join(group)
        .join(kind)
}

/// (status, message) that the health check of `group/kind` returns for `obj`.
pub fn health(group: &str, kind: &str, obj: &serde_json::Value) -> (String, String) {
    let script = std::fs::read_to_string(dir(group, kind).join("health.lua")).unwrap();
    let lua = Lua::new();
    // JSON null becomes nil, as in Argo CD (absent fields read as nil).
    let opts = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, opts).unwrap();
    lua.globals().set("obj", value).unwrap();
    let hs: Table = lua.load(&script).set_name("health.lua").eval().unwrap();
    let status: String = hs.get("status").unwrap();
    let message: Option<String> = hs.get("message").unwrap();
    (status, message.unwrap_or_default())
}

//! Kind names on the command line, resolved as kubectl resolves them: plural, singular,
//! short name or kind, optionally qualified by group (`virtualmachines.kubevirt.io`), and
//! the `KIND/NAME` form.

use super::CliError;
use api::resource::ResourceDef;

/// The resource `name` means.
pub fn resolve(name: &str) -> Result<&'static ResourceDef, CliError> {
    if let Some(d) = api::resource::find_name(name) {
        return Ok(d);
    }
    // `plural.group` / `kind.group` (e.g. `vm.kubevirt.io`, `datavolumes.cdi.kubevirt.io`).
    if let Some((res, group)) = name.split_once('.') {
        let lower = res.to_ascii_lowercase();
        if let Some(d) = api::resource::resources().iter().find(|d| {
            d.group.eq_ignore_ascii_case(group)
                && (d.plural == lower
                    || d.singular == lower
                    || d.short_names.contains(&lower.as_str())
                    || d.kind.eq_ignore_ascii_case(res))
        }) {
            return Ok(d);
        }
    }
    Err(CliError::Usage(format!(
        "the server doesn't have a resource type \"{name}\""
    )))
}

/// `singular.group` (`virtualmachine.kubevirt.io`), or the singular for the core group, as
/// kubectl names objects in its messages.
pub fn qualified_singular(def: &ResourceDef) -> String {
    if def.group.is_empty() {
        def.singular.to_string()
    } else {
        format!("{}.{}", def.singular, def.group)
    }
}

/// `plural.group`, or the plural for the core group.
pub fn qualified_plural(def: &ResourceDef) -> String {
    if def.group.is_empty() {
        def.plural.to_string()
    } else {
        format!("{}.{}", def.plural, def.group)
    }
}

/// Splits `KIND/NAME` arguments from `KIND NAME...`: the resource and the names.
pub fn targets(args: &[String]) -> Result<(&'static ResourceDef, Vec<String>), CliError> {
    let Some(first) = args.first() else {
        return Err(CliError::Usage(
            "you must specify the type of resource (e.g. vm, vmi, pvc, dv, node)".into(),
        ));
    };
    if first.contains('/') {
        let mut def = None;
        let mut names = Vec::new();
        for a in args {
            let (k, n) = a.split_once('/').ok_or_else(|| {
                CliError::Usage(format!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (got {a:?})"
                ))
            })?;
            let d = resolve(k)?;
            if def.is_some_and(|p: &ResourceDef| p.plural != d.plural || p.group != d.group) {
                return Err(CliError::Usage(
                    "all KIND/NAME arguments must name the same kind".into(),
                ));
            }
            def = Some(d);
            names.push(n.to_string());
        }
        let def = def.expect("args is not empty, so one KIND/NAME was read");
        return Ok((def, names));
    }
    Ok((resolve(first)?, args[1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plural_and_qualified_names() {
        assert_eq!(resolve("vm").expect("vm").kind, "VirtualMachine");
        assert_eq!(
            resolve("vmis").expect("vmis").kind,
            "VirtualMachineInstance"
        );
        assert_eq!(resolve("dv").expect("dv").kind, "DataVolume");
        assert_eq!(resolve("pvc").expect("pvc").kind, "PersistentVolumeClaim");
        assert_eq!(
            resolve("virtualmachines.kubevirt.io")
                .expect("qualified")
                .kind,
            "VirtualMachine"
        );
        assert_eq!(
            resolve("VirtualMachine").expect("kind").plural,
            "virtualmachines"
        );
        let e = resolve("pods").expect_err("not served");
        assert_eq!(
            e.to_string(),
            "error: the server doesn't have a resource type \"pods\""
        );
    }

    #[test]
    fn kind_slash_name() {
        let (d, n) = targets(&["vm/a".into(), "vms/b".into()]).expect("ok");
        assert_eq!(d.kind, "VirtualMachine");
        assert_eq!(n, ["a", "b"]);
        let (d, n) = targets(&["ns".into(), "x".into()]).expect("ok");
        assert_eq!(d.kind, "Namespace");
        assert_eq!(n, ["x"]);
        assert!(targets(&["vm/a".into(), "ns/b".into()]).is_err());
        assert!(targets(&[]).is_err());
        assert_eq!(qualified_singular(d), "namespace");
        assert_eq!(
            qualified_singular(resolve("vm").expect("vm")),
            "virtualmachine.kubevirt.io"
        );
    }
}

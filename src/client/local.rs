//! The in-process transport: the store's [`Objects`] behind the same request checks the
//! HTTP handlers run (identity of the body against the path, apply-patch rules).

use super::{ClientError, List, Reply};
use crate::apiserver::resource::{check_apply, check_identity};
use crate::store::{DeleteOptions, ListOptions, Objects, Patch, WatchEvent, WriteOptions, Written};
use api::resource::ResourceDef;
use futures_util::stream::{BoxStream, StreamExt};
use serde_json::Value;

#[derive(Clone)]
pub(crate) struct Local {
    objects: Objects,
}

fn reply(w: Written) -> Reply {
    Reply {
        object: w.object,
        created: w.created,
        warnings: w.warnings,
    }
}

impl Local {
    pub(crate) fn new(objects: Objects) -> Self {
        Self { objects }
    }

    pub(crate) fn get(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ClientError> {
        Ok(self.objects.get(def, ns, name)?)
    }

    pub(crate) fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<List<Value>, ClientError> {
        let l = self.objects.list(def, ns, opts)?;
        Ok(List {
            items: l.items,
            resource_version: l.resource_version.to_string(),
            continue_token: l.continue_token,
        })
    }

    pub(crate) async fn create(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Reply, ClientError> {
        check_identity(def, &mut obj, ns, None)?;
        Ok(reply(self.objects.create(def, ns, obj, opts).await?))
    }

    pub(crate) async fn update(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Reply, ClientError> {
        check_identity(def, &mut obj, ns, Some(name))?;
        Ok(reply(self.objects.update(def, ns, name, obj, opts).await?))
    }

    pub(crate) async fn patch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        patch: Patch,
        opts: &WriteOptions,
    ) -> Result<Reply, ClientError> {
        let patch = match patch {
            Patch::Apply(mut v) => {
                check_apply(def, &mut v, opts.field_manager.as_deref())?;
                Patch::Apply(v)
            }
            other => other,
        };
        Ok(reply(self.objects.patch(def, ns, name, patch, opts).await?))
    }

    pub(crate) async fn delete(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool), ClientError> {
        let d = self.objects.delete(def, ns, name, opts).await?;
        Ok((d.object, d.removed))
    }

    pub(crate) fn watch(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<BoxStream<'static, Result<WatchEvent, ClientError>>, ClientError> {
        let rx = self.objects.watch(def, ns, opts)?;
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|e| (Ok(e), rx))
        })
        .boxed())
    }
}

//! `monovirt image-upload` (virtctl's image-upload): creates an upload DataVolume (or uses
//! an upload claim), waits until it is ready for data, asks for an upload token, streams the
//! local image to the upload endpoint with a progress bar, and waits for the volume to be
//! populated.

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Errors of an image upload.
#[derive(Debug, thiserror::Error)]
pub enum UploaderError {
    #[error("Reading {0} failed")]
    Image(PathBuf, #[source] std::io::Error),
    #[error("Talking to {0} failed")]
    Http(String, #[source] reqwest::Error),
    #[error("{what} answered {code}: {message}")]
    Refused {
        what: String,
        code: u16,
        message: String,
    },
    #[error("{0} did not become ready for an upload within {1:?}")]
    NotReady(String, Duration),
    #[error("The upload finished but the volume failed: {0}")]
    Failed(String),
    #[error("{0} is no PEM certificate")]
    Certificate(PathBuf, #[source] reqwest::Error),
    #[error("Setting up the HTTP client failed")]
    Client(#[source] reqwest::Error),
}

/// What to upload where.
#[derive(Debug, Clone, clap::Args)]
pub struct UploadArgs {
    /// `dv` (a DataVolume, created unless it exists) or `pvc` (an upload-target claim).
    #[arg(value_parser = ["dv", "pvc"])]
    pub kind: String,
    /// The DataVolume's (or claim's) name.
    pub name: String,
    /// The local image (raw, qcow2, vmdk, vhdx, vdi, iso; optionally gzip or xz).
    #[arg(long)]
    pub image_path: PathBuf,
    /// The size of the volume to create, e.g. `10Gi`.
    #[arg(long)]
    pub size: Option<String>,
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// The StorageClass of a created volume (the default class when unset).
    #[arg(long)]
    pub storage_class: Option<String>,
    /// The API server (and upload proxy).
    #[arg(long, env = "MONOVIRT_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A bearer token for the API.
    #[arg(long, env = "MONOVIRT_TOKEN")]
    pub token: Option<String>,
    /// Where the image bytes go (virtctl's `--uploadproxy-url`); the API server, which is
    /// also the upload proxy, by default.
    #[arg(long)]
    pub uploadproxy_url: Option<String>,
    /// A PEM file with the CA that signed the server's certificate (for `https://`), e.g.
    /// the server's `<data-dir>/tls/ca.crt`.
    #[arg(long)]
    pub certificate_authority: Option<PathBuf>,
    /// Do not verify the server's certificate (virtctl's `--insecure`).
    #[arg(long)]
    pub insecure: bool,
    /// How long to wait for the volume to be ready for data.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub wait_secs: Duration,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

struct Session {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Session {
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn json(
        &self,
        what: &str,
        r: reqwest::RequestBuilder,
    ) -> Result<Option<Value>, UploaderError> {
        let resp = r
            .send()
            .await
            .map_err(|e| UploaderError::Http(self.base.clone(), e))?;
        let code = resp.status().as_u16();
        if code == 404 {
            return Ok(None);
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !(200..300).contains(&code) {
            return Err(UploaderError::Refused {
                what: what.to_string(),
                code,
                message: body["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(Some(body))
    }
}

fn phase_of(dv: &Value) -> &str {
    dv.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Runs an upload; prints progress to stderr and a summary to stdout.
pub async fn run(args: &UploadArgs) -> Result<(), UploaderError> {
    let mut http = reqwest::Client::builder().danger_accept_invalid_certs(args.insecure);
    if let Some(path) = &args.certificate_authority {
        let pem = std::fs::read(path).map_err(|e| UploaderError::Image(path.clone(), e))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| UploaderError::Certificate(path.clone(), e))?;
        http = http.add_root_certificate(ca);
    }
    let s = Session {
        http: http.build().map_err(UploaderError::Client)?,
        base: args.server.trim_end_matches('/').to_string(),
        token: args.token.clone(),
    };
    let ns = &args.namespace;
    let len = std::fs::metadata(&args.image_path)
        .map_err(|e| UploaderError::Image(args.image_path.clone(), e))?
        .len();
    let dv_path = format!("/apis/cdi.kubevirt.io/v1beta1/namespaces/{ns}/datavolumes");
    let pvc_path = format!("/api/v1/namespaces/{ns}/persistentvolumeclaims");
    let is_dv = args.kind == "dv";
    if is_dv {
        let exists = s
            .json(
                "get DataVolume",
                s.req(reqwest::Method::GET, &format!("{dv_path}/{}", args.name)),
            )
            .await?
            .is_some();
        if !exists {
            let size = args.size.clone().ok_or_else(|| UploaderError::Refused {
                what: "image-upload".into(),
                code: 400,
                message: "--size is needed to create a DataVolume".into(),
            })?;
            let mut storage = json!({"resources": {"requests": {"storage": size}}});
            if let Some(c) = &args.storage_class {
                storage["storageClassName"] = json!(c);
            }
            let dv = json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                "metadata": {"name": args.name, "namespace": ns},
                "spec": {"source": {"upload": {}}, "storage": storage}});
            s.json(
                "create DataVolume",
                s.req(reqwest::Method::POST, &dv_path).json(&dv),
            )
            .await?;
            eprintln!("DataVolume {ns}/{} created", args.name);
        }
    }
    // Ready for data: the DataVolume says UploadReady (or the claim's populator is running).
    let deadline = Instant::now() + args.wait_secs;
    loop {
        let ready = if is_dv {
            s.json(
                "get DataVolume",
                s.req(reqwest::Method::GET, &format!("{dv_path}/{}", args.name)),
            )
            .await?
            .is_some_and(|d| phase_of(&d) == "UploadReady")
        } else {
            s.json(
                "get PVC",
                s.req(reqwest::Method::GET, &format!("{pvc_path}/{}", args.name)),
            )
            .await?
            .is_some_and(|p| {
                p.pointer("/metadata/annotations/cdi.kubevirt.io~1storage.pod.ready")
                    .and_then(Value::as_str)
                    == Some("true")
            })
        };
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err(UploaderError::NotReady(
                format!("{ns}/{}", args.name),
                args.wait_secs,
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let req = json!({"apiVersion": "upload.cdi.kubevirt.io/v1beta1", "kind": "UploadTokenRequest",
        "metadata": {"name": args.name, "namespace": ns}, "spec": {"pvcName": args.name}});
    let token = s
        .json(
            "UploadTokenRequest",
            s.req(
                reqwest::Method::POST,
                &format!(
                    "/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/{ns}/uploadtokenrequests"
                ),
            )
            .json(&req),
        )
        .await?
        .and_then(|v| {
            v.pointer("/status/token")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .ok_or_else(|| UploaderError::Refused {
            what: "UploadTokenRequest".into(),
            code: 404,
            message: "no token".into(),
        })?;
    let bar = if args.no_progress {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(len)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let file = tokio::fs::File::open(&args.image_path)
        .await
        .map_err(|e| UploaderError::Image(args.image_path.clone(), e))?;
    let pb = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |c| {
        if let Ok(b) = c {
            pb.inc(b.len() as u64);
        }
    });
    let proxy = args
        .uploadproxy_url
        .as_deref()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| s.base.clone());
    let resp = s
        .http
        .post(format!("{proxy}/v1beta1/upload"))
        .bearer_auth(&token)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|e| UploaderError::Http(proxy.clone(), e))?;
    bar.finish();
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    if !(200..300).contains(&code) {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        return Err(UploaderError::Refused {
            what: "upload".into(),
            code,
            message,
        });
    }
    if is_dv {
        let deadline = Instant::now() + args.wait_secs;
        loop {
            let dv = s
                .json(
                    "get DataVolume",
                    s.req(reqwest::Method::GET, &format!("{dv_path}/{}", args.name)),
                )
                .await?
                .unwrap_or(Value::Null);
            match phase_of(&dv) {
                "Succeeded" => break,
                "Failed" => {
                    return Err(UploaderError::Failed(
                        dv.pointer("/status/conditions")
                            .and_then(Value::as_array)
                            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                            .and_then(|c| c["message"].as_str())
                            .unwrap_or("unknown")
                            .to_string(),
                    ))
                }
                _ if Instant::now() > deadline => {
                    return Err(UploaderError::NotReady(
                        format!("{ns}/{}", args.name),
                        args.wait_secs,
                    ))
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    println!("{}", text.trim());
    Ok(())
}

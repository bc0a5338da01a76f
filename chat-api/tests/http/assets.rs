//! The widget's and the frame's files over HTTP: compressed as the client
//! accepts (gzip, brotli), the same bytes once decoded, a strong ETag per
//! encoding that stays put, `304` on revalidation, `Vary: Accept-Encoding`.

use std::io::Read;

use reqwest::header::{HeaderMap, ACCEPT_ENCODING, IF_NONE_MATCH};

use super::*;

/// The files every visitor's browser loads; the frame's parts as its page
/// names them, with their version.
async fn assets(node: &Node) -> Vec<String> {
    let page = node.get("/v1/sites/demo/rooms/lobby/frame").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let mut paths = vec!["/v1/widget.js".to_owned()];
    for part in ["/v1/frame.css?v=", "/v1/frame.js?v="] {
        let start = html
            .find(part)
            .unwrap_or_else(|| panic!("{part} in {html}"));
        let end = start + html[start..].find('"').unwrap();
        paths.push(html[start..end].to_owned());
    }
    paths.push("/v1/sites/demo/rooms/lobby/frame".to_owned());
    paths
}

async fn fetch(node: &Node, path: &str, accept: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = node.client.get(node.url(path));
    if let Some(a) = accept {
        req = req.header(ACCEPT_ENCODING, a);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.unwrap().to_vec())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

fn unbrotli(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(body, 4096)
        .read_to_end(&mut out)
        .expect("a brotli body");
    out
}

#[tokio::test]
async fn assets_come_compressed_when_accepted_and_decode_to_the_original() {
    let node = Node::start(|_| {}).await;
    for path in assets(&node).await {
        // Without Accept-Encoding: the original bytes, no Content-Encoding.
        let (status, plain_h, plain) = fetch(&node, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(header(&plain_h, "content-encoding"), None, "{path}");
        assert_eq!(header(&plain_h, "vary"), Some("Accept-Encoding"), "{path}");
        assert!(header(&plain_h, "cache-control").is_some(), "{path}");
        assert!(!plain.is_empty());

        let (status, gz_h, gz) = fetch(&node, &path, Some("gzip, deflate")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&gz_h, "content-encoding"), Some("gzip"), "{path}");
        assert_eq!(header(&gz_h, "vary"), Some("Accept-Encoding"));
        assert_eq!(gunzip(&gz), plain, "{path}: gzip decodes to the original");
        assert!(gz.len() < plain.len(), "{path}: gzip is smaller");
        assert_eq!(
            header(&gz_h, "content-length").map(|l| l.parse::<usize>().unwrap()),
            Some(gz.len())
        );

        let (status, br_h, br) = fetch(&node, &path, Some("gzip, deflate, br")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&br_h, "content-encoding"), Some("br"), "{path}");
        assert_eq!(
            unbrotli(&br),
            plain,
            "{path}: brotli decodes to the original"
        );

        // A client that refuses brotli gets gzip; one that names nothing
        // we have gets the original.
        let (_, h, _) = fetch(&node, &path, Some("br;q=0, gzip")).await;
        assert_eq!(header(&h, "content-encoding"), Some("gzip"));
        let (_, h, body) = fetch(&node, &path, Some("zstd, deflate")).await;
        assert_eq!(header(&h, "content-encoding"), None);
        assert_eq!(body, plain);

        // One strong ETag per encoding.
        let tags: Vec<&str> = [&plain_h, &gz_h, &br_h]
            .iter()
            .map(|h| header(h, "etag").expect("an ETag"))
            .collect();
        for tag in &tags {
            assert!(tag.starts_with('"') && tag.ends_with('"'), "strong: {tag}");
        }
        assert!(tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2]);
        assert_eq!(
            header(&plain_h, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn etags_stay_put_and_revalidation_answers_304() {
    let node = Node::start(|_| {}).await;
    for path in assets(&node).await {
        for accept in [None, Some("gzip"), Some("br, gzip")] {
            let (_, first, body) = fetch(&node, &path, accept).await;
            let (_, again, body_again) = fetch(&node, &path, accept).await;
            let etag = header(&first, "etag").unwrap().to_owned();
            assert_eq!(header(&again, "etag"), Some(etag.as_str()), "{path} stable");
            assert_eq!(body, body_again);

            let mut req = node
                .client
                .get(node.url(&path))
                .header(IF_NONE_MATCH, &etag);
            if let Some(a) = accept {
                req = req.header(ACCEPT_ENCODING, a);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{path} {accept:?}");
            let h = res.headers().clone();
            assert_eq!(header(&h, "etag"), Some(etag.as_str()));
            assert_eq!(header(&h, "vary"), Some("Accept-Encoding"));
            assert_eq!(header(&h, "cache-control"), header(&first, "cache-control"));
            assert!(res.bytes().await.unwrap().is_empty());

            // Another encoding's tag, a weak form of it and a list.
            let res = node
                .client
                .get(node.url(&path))
                .header(IF_NONE_MATCH, format!("W/{etag}, \"other\""))
                .header(ACCEPT_ENCODING, accept.unwrap_or(""))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "weak comparison");
        }
        // The identity tag does not validate the gzip form.
        let (_, plain, _) = fetch(&node, &path, None).await;
        let res = node
            .client
            .get(node.url(&path))
            .header(ACCEPT_ENCODING, "gzip")
            .header(IF_NONE_MATCH, header(&plain, "etag").unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    node.stop().await;
}

#[tokio::test]
async fn caching_rules_per_asset() {
    let node = Node::start(|_| {}).await;
    let paths = assets(&node).await;
    let cache = |h: &HeaderMap| header(h, "cache-control").unwrap().to_owned();
    let (_, widget, _) = fetch(&node, "/v1/widget.js", None).await;
    assert!(cache(&widget).starts_with("public, max-age=300"));
    // The frame's parts by their version never change; without it (or by
    // another version) they are kept a short while only.
    for versioned in &paths[1..3] {
        let (_, h, _) = fetch(&node, versioned, None).await;
        assert_eq!(
            cache(&h),
            "public, max-age=31536000, immutable",
            "{versioned}"
        );
        let bare = versioned.split('?').next().unwrap();
        let (_, h, _) = fetch(&node, bare, None).await;
        assert!(cache(&h).starts_with("public, max-age=300"), "{bare}");
        let (_, h, _) = fetch(&node, &format!("{bare}?v=0000"), None).await;
        assert!(cache(&h).starts_with("public, max-age=300"), "{bare}");
    }
    // The frame's page is revalidated every time and keeps its policy on
    // a 304; the ETag changes with the site's origins.
    let frame = "/v1/sites/demo/rooms/lobby/frame";
    let (_, h, _) = fetch(&node, frame, Some("gzip")).await;
    assert_eq!(cache(&h), "no-cache");
    let etag = header(&h, "etag").unwrap().to_owned();
    let res = node
        .client
        .get(node.url(frame))
        .header(ACCEPT_ENCODING, "gzip")
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let csp = header(res.headers(), "content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors"), "{csp}");
    // Another room of the site: the same page and policy, the same tag.
    let (_, other, _) = fetch(&node, "/v1/sites/demo/rooms/other/frame", Some("gzip")).await;
    assert_eq!(header(&other, "etag"), Some(etag.as_str()));
    // A site with other origins: another policy, another tag.
    let res = node
        .client
        .post(node.url("/v1/admin/sites"))
        .bearer_auth(OPERATOR)
        .json(&json!({"id": "shop", "origins": ["https://shop.example"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let (_, shop, _) = fetch(&node, "/v1/sites/shop/rooms/lobby/frame", Some("gzip")).await;
    let shop_tag = header(&shop, "etag").unwrap();
    assert_ne!(shop_tag, etag);
    assert!(shop_tag.ends_with("-gz\""), "{shop_tag}");
    // An unknown site is still a JSON 404, uncompressed.
    let (status, h, _) = fetch(&node, "/v1/sites/nosuch/rooms/lobby/frame", Some("gzip")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(header(&h, "content-encoding"), None);
    node.stop().await;
}

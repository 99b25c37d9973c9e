#!/usr/bin/env python3
"""Run a ComfyUI workflow on a RunPod serverless endpoint and save the images.

The baseline of `bun run bench`: the script people hand-roll today, written the obvious way
(requests, a fixed sleep between status checks, base64 decoded in memory). Keep it plain:
no long polling, no streaming, no retries; it is what send-to-runpod is measured against.
"""
import argparse
import base64
import json
import os
import sys
import time

import requests

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


def main():
    parser = argparse.ArgumentParser(
        description="Run a ComfyUI workflow (API format) on a RunPod serverless endpoint and save the images.",
        epilog="Environment: RUNPOD_API_KEY, RUNPOD_ENDPOINT_ID, RUNPOD_ENDPOINT_BASE_URL (default https://api.runpod.ai/v2).",
    )
    parser.add_argument("--workflow", required=True, help="ComfyUI workflow in API format (JSON)")
    parser.add_argument("--images", nargs="*", default=[], help="reference images, sent under their file names")
    parser.add_argument("--output", default="output", help="where the images are saved (default: ./output)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between status checks (default: 2)")
    args = parser.parse_args()

    api_key = os.environ.get("RUNPOD_API_KEY")
    endpoint_id = os.environ.get("RUNPOD_ENDPOINT_ID")
    if not api_key or not endpoint_id:
        sys.exit("RUNPOD_API_KEY and RUNPOD_ENDPOINT_ID must be set")
    base_url = os.environ.get("RUNPOD_ENDPOINT_BASE_URL", "https://api.runpod.ai/v2").rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"}

    with open(args.workflow) as f:
        workflow = json.load(f)
    reference_images = {}
    for path in args.images:
        with open(path, "rb") as f:
            reference_images[os.path.basename(path)] = base64.b64encode(f.read()).decode("ascii")

    payload = {"input": {"workflow": workflow, "reference_images": reference_images, "return_base64": True}}
    response = requests.post(f"{base_url}/{endpoint_id}/run", json=payload, headers=headers, timeout=60)
    response.raise_for_status()
    job_id = response.json()["id"]
    print(f"job {job_id} submitted", file=sys.stderr)

    while True:
        time.sleep(args.poll_interval)
        response = requests.get(f"{base_url}/{endpoint_id}/status/{job_id}", headers=headers, timeout=60)
        response.raise_for_status()
        job = response.json()
        if job["status"] in TERMINAL:
            break

    if job["status"] != "COMPLETED":
        sys.exit(f"job {job_id} ended {job['status']}: {job.get('error', '')}")

    os.makedirs(args.output, exist_ok=True)
    for n, data in enumerate(job["output"]["images"], start=1):
        path = os.path.join(args.output, f"output_{n}.png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        print(path)


if __name__ == "__main__":
    main()

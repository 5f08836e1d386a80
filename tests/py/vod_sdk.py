"""Drives the official Alibaba Cloud Python SDK (aliyun-python-sdk-core and -vod) against a VOD
endpoint, to check the tests' VOD fake against the SDK's own signing.

Usage: vod_sdk.py HOST:PORT ACCESS_KEY_ID ACCESS_KEY_SECRET VIDEO_ID JOB_ID

Prints one line per case: `NAME OK [DETAIL]` or `NAME ERROR CODE`.
"""

import json
import sys

from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.utils import parameter_helper
from aliyunsdkvod.request.v20170321.DeleteStreamRequest import DeleteStreamRequest
from aliyunsdkvod.request.v20170321.GetPlayInfoRequest import GetPlayInfoRequest

endpoint, key_id, secret, video, job = sys.argv[1:6]


def get_play_info():
    request = GetPlayInfoRequest()
    request.set_VideoId(video)
    request.set_ResultType("Multiple")
    return request


def delete_stream():
    request = DeleteStreamRequest()
    request.set_VideoId(video)
    request.set_JobIds(job)
    return request


def call(name, request, with_secret=secret, detail=None):
    client = AcsClient(key_id, with_secret, "cn-shanghai", auto_retry=False)
    request.set_endpoint(endpoint)
    request.set_protocol_type("http")
    try:
        body = json.loads(client.do_action_with_exception(request))
        print(name, "OK", detail(body) if detail else "")
    except ServerException as e:
        print(name, "ERROR", e.get_error_code())


def job_ids(body):
    return ",".join(p["JobId"] for p in body["PlayInfoList"]["PlayInfo"])


call("get", get_play_info(), detail=job_ids)
call("wrong-secret", get_play_info(), with_secret=secret + "x")

fresh_uuid = parameter_helper.get_uuid
parameter_helper.get_uuid = lambda: "fixed-nonce-for-the-reuse-case"
call("nonce-first", get_play_info())
call("nonce-reused", get_play_info())
parameter_helper.get_uuid = fresh_uuid

fresh_date = parameter_helper.get_iso_8061_date
parameter_helper.get_iso_8061_date = lambda: "2020-01-01T00:00:00Z"
call("stale", get_play_info())
parameter_helper.get_iso_8061_date = fresh_date

call("delete", delete_stream())
call("after-delete", get_play_info(), detail=job_ids)

"""Drives the official Alibaba Cloud Python SDK (aliyun-python-sdk-core and -vod) against a VOD
endpoint, to check the tests' VOD fake against the SDK's own signing; and reads the fake's
GetPlayInfo answer with the response model of the official SDK that has one
(alibabacloud_vod20170321), to check its shape.

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
from alibabacloud_vod20170321.models import GetPlayInfoResponseBody

endpoint, key_id, secret, video, job = sys.argv[1:6]


def get_play_info():
    request = GetPlayInfoRequest()
    request.set_VideoId(video)
    request.set_ResultType("Multiple")
    return request


def play_info_with_auth_timeout():
    request = get_play_info()
    request.set_AuthTimeout(600)
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


def official_model(body):
    """The first stream's JobId and PlayURL as the official model reads them, and `same` when
    the model holds the whole body (every field the fake sends is one of the model's, nested
    and named as the model has it), `differs` otherwise."""
    model = GetPlayInfoResponseBody().from_map(body)
    first = model.play_info_list.play_info[0]
    same = "same" if model.to_map() == body else "differs"
    return f"{first.job_id} {first.play_url} {same}"


call("get", get_play_info(), detail=job_ids)
call("model", play_info_with_auth_timeout(), detail=official_model)
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

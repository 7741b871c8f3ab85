"""Creates an S3 bucket if it does not exist yet: s3_bucket.py ENDPOINT ACCESS_KEY SECRET_KEY BUCKET"""
import sys

import boto3
from botocore.exceptions import ClientError

endpoint, access_key, secret_key, bucket = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                  aws_secret_access_key=secret_key, region_name="us-east-1")
try:
    s3.create_bucket(Bucket=bucket)
except ClientError as e:
    if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
        raise

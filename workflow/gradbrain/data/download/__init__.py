"""Fetch the real datasets: NSD and THINGS-MEG from anonymous S3, the THINGS images from OSF.

``files`` (what each job needs and the terms; light, read when the DAG is built), ``transfer`` (resumable, verified
S3 and HTTP downloads) and ``things_images`` (the archive's password and unpacking).
"""

"""Turning trained detectors into deployable TFLite files: conversion, metadata, accelerator reports."""

"""Writers of outputs: zarr blocks (encoded here, or through zarr), background writes, durable files.

Later: pyramids and previews, each as a module here.
"""

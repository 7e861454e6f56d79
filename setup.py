"""Build ghostsr_mm and its compiled shift op ``ghostsr_mm._ext``.

The C++ (CPU) kernels are always built. The CUDA kernels are built when a GPU
is visible or when ``FORCE_CUDA=1`` is set (as mmcv's setup.py decides), so a
build machine without a GPU can still produce the CUDA op. Build with::

    pip install --no-build-isolation -e .
"""
import glob
import os
import os.path as osp

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def get_version() -> str:
    namespace: dict = {}
    with open(osp.join(ROOT, 'ghostsr_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def get_extensions() -> list:
    """The ``ghostsr_mm._ext`` extension: CPU always, CUDA when asked."""
    import torch
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    csrc = osp.join('csrc')
    sources = glob.glob(osp.join(csrc, 'pytorch', '*.cpp'))
    sources += glob.glob(osp.join(csrc, 'pytorch', 'cpu', '*.cpp'))
    include_dirs = [osp.abspath(osp.join(csrc, 'common'))]
    # at::parallel_for is inline and only runs in parallel when the
    # extension itself is compiled with OpenMP (as torch is on Linux).
    extra_compile_args = {'cxx': ['-O3', '-fopenmp']}
    extra_link_args = ['-fopenmp']
    define_macros = []

    with_cuda = os.getenv('FORCE_CUDA', '0') == '1' or (
        torch.cuda.is_available() and os.getenv('FORCE_CPU', '0') != '1')
    if with_cuda:
        sources += glob.glob(osp.join(csrc, 'pytorch', 'cuda', '*.cu'))
        define_macros.append(('WITH_CUDA', None))
        extra_compile_args['nvcc'] = ['-O3']
        extension = CUDAExtension
    else:
        extension = CppExtension
    return [
        extension(
            name='ghostsr_mm._ext',
            sources=sorted(sources),
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args)
    ]


def get_cmdclass() -> dict:
    from torch.utils.cpp_extension import BuildExtension
    return {'build_ext': BuildExtension.with_options(use_ninja=True)}


setup(
    name='ghostsr_mm',
    version=get_version(),
    description='GhostSR (learning ghost features for efficient image '
    'super-resolution) as an MMagic plugin',
    long_description=open(osp.join(ROOT, 'README.md')).read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=('ghostsr_mm', 'ghostsr_mm.*')),
    install_requires=['torch>=2.4', 'mmagic>=1.2.0', 'mmengine>=0.10.0',
                      'scikit-learn'],
    ext_modules=get_extensions(),
    cmdclass=get_cmdclass(),
    zip_safe=False,
)

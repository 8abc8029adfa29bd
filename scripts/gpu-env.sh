# Sourced by the scripts that run on the GPU machine, from the repository
# root: unpacks what scripts/gpu-pack.sh packed into .gpu/, puts the libraries
# on the library path and keeps NVLink multicast off.
OUT=${OUT:-/tmp/nmoe-gpu-out}
mkdir -p "$OUT" /tmp/nmoe-libs
tar -xJf .gpu/deps.tar.xz -C /tmp/nmoe-libs
[ -f .gpu/bin.tar.xz ] && tar -xJf .gpu/bin.tar.xz -C .gpu
export LD_LIBRARY_PATH=/tmp/nmoe-libs/lib:${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}${NMOE_CUDNN_LIB_DIR:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib}  # cuDNN 9: not packed
# NCCL (dense collectives when every rank has a GPU of its own): loaded at run time, not packed.
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:${NMOE_NCCL_LIB_DIR:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib}
export NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 TORCH_SYMM_MEM_DISABLE_MULTICAST=1

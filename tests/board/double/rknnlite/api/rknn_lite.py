"""`RKNNLite` as rknn-toolkit-lite2 2.5.0 defines it: the same constants, signatures, return
values (0/-1, None on failure, never an exception for a runtime failure) and log lines, with
the same control flow as the real rknn_lite.py. What happens below it (librknnrt and the NPU)
is emulated in rknn_runtime.py.

Left out: list_devices() (adb/ntb, host-side only) and list_support_target_platform()
(its return format is not documented well enough to copy).
"""

import os
import traceback

from .rknn_log import set_log_level_and_file_path
from .rknn_runtime import RKNNRuntime, read_registry, sha256_hex


class RKNNLite:

    NPU_CORE_AUTO = 0  # default, run on NPU core randomly.
    NPU_CORE_0 = 1  # run on NPU core 0.
    NPU_CORE_1 = 2  # run on NPU core 1.
    NPU_CORE_2 = 4  # run on NPU core 2.
    NPU_CORE_0_1 = 3  # run on NPU core 0 and core 1.
    NPU_CORE_0_1_2 = 7  # run on NPU core 0, core 1 and core 2.
    NPU_CORE_ALL = 0xffff  # run on all NPU cores.

    def __init__(self, verbose=False, verbose_file=None):
        self.target = 'simulator'
        self.verbose = verbose
        if verbose_file is not None:
            if os.path.dirname(verbose_file) != "" and not os.path.exists(os.path.dirname(verbose_file)):
                verbose_file = None
        self.rknn_log = set_log_level_and_file_path(verbose, verbose_file)

        # The real one asks pkg_resources; a board without the dist-info logs nothing here.
        try:
            import importlib.metadata

            self.rknn_log.w('rknn-toolkit-lite2 version: ' + importlib.metadata.version("rknn-toolkit-lite2"))
        except Exception:
            pass

        if verbose:
            if verbose_file is None:
                self.rknn_log.w('Verbose file path is invalid, debug info will not dump to file.')
            else:
                self.rknn_log.d('Save log info to: {}'.format(verbose_file))
        self.rknn_data = None
        self.rknn_user_key = None
        self.load_model_in_npu = False
        self.rknn_runtime = None
        self.root_dir = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
        # The double's own state: which registered model and fault the loaded file stands for.
        self._entry = None
        self._fault = None

    def load_rknn(self, path, key_path=None):
        """
        Load RKNN model: reads the file, nothing more (the real one checks the model only in
        init_runtime). The registry is read here, fresh.
        :return: success: 0, failure: -1
        """
        if path is None or path == "" or not os.path.exists(path):
            self.rknn_log.e('Invalid RKNN model path: {}'.format("None" if (path is None or path == "") else path),
                            False)
            return -1
        try:
            with open(path, 'rb') as f:
                self.rknn_data = f.read()
        except Exception:
            self.rknn_log.e('Catch exception when loading RKNN model [{}]!'.format(path), False)
            self.rknn_log.e(traceback.format_exc(), False)
            return -1

        if self.rknn_data is None:
            return -1

        self.rknn_user_key = None
        if key_path is not None:
            if not os.path.exists(key_path):
                self.rknn_log.e('Invalid key envelope path: {}'.format(key_path), False)
                self.rknn_user_key = None
                return -1
            try:
                with open(key_path, 'rb') as f:
                    self.rknn_user_key = f.read()
            except Exception:
                self.rknn_log.e('Catch exception when loading key envelope [{}]!'.format(key_path), False)
                self.rknn_log.e(traceback.format_exc(), False)
                self.rknn_user_key = None
                return -1

        registry = read_registry()
        self._entry = registry["models"].get(sha256_hex(self.rknn_data))
        self._fault = registry["faults"].get(os.path.basename(path))
        if self._fault is None and self._entry is not None:  # a fault of any model that has this op type
            ops = self._entry.get("op_types") or []
            self._fault = next((f for op, f in registry.get("op_faults", {}).items() if op in ops), None)
        return 0

    def init_runtime(self, target=None, device_id=None, async_mode=False, core_mask=NPU_CORE_AUTO):
        """
        Init run time environment. On the board, target is None (the NPU inside).
        :param core_mask: RKNNLite.NPU_CORE_AUTO (default), NPU_CORE_0, NPU_CORE_1, NPU_CORE_2,
                          NPU_CORE_0_1, NPU_CORE_0_1_2 (RK3588 only), NPU_CORE_ALL
        :return: success: 0, failure: -1
        """
        self.rknn_log.d('target set by user is: {}'.format(target))

        if self.rknn_data is None:
            self.rknn_log.e("Model is not loaded yet, this interface should be called after load_rknn!", False)
            return -1

        if self.rknn_runtime is not None:
            self.rknn_runtime.release()
            self.rknn_runtime = None
        try:
            self.rknn_runtime = RKNNRuntime(root_dir=self.root_dir, target=target, device_id=device_id,
                                            async_mode=async_mode, core_mask=core_mask, log=self.rknn_log)
        except Exception:
            self.rknn_log.e('Catch exception when init runtime!', False)
            self.rknn_log.e(traceback.format_exc(), False)
            return -1

        try:
            self.rknn_runtime.build_graph(self.rknn_data, self.load_model_in_npu, self.rknn_user_key,
                                          entry=self._entry, fault=self._fault)
        except Exception:
            self.rknn_log.e('Catch exception when init runtime!', False)
            self.rknn_log.e(traceback.format_exc(), False)
            return -1

        try:
            ret = self.rknn_runtime.set_core_mask(core_mask)
        except Exception:
            self.rknn_log.e('Catch exception when set npu core mode.', False)
            return -1

        try:
            self.rknn_runtime.check_rt_version()
        except Exception:
            self.rknn_log.e('Catch exception when init runtime!', False)
            self.rknn_log.e(traceback.format_exc(), False)
            return -1

        self.rknn_runtime.extend_rt_lib()
        self.rknn_runtime.check_dynamic_shape()
        return ret

    def inference(self, inputs, data_type=None, data_format=None, inputs_pass_through=None, get_frame_id=False,
                  reuse_outputs=False):
        """
        Run model inference
        :param inputs: Input data List (ndarray list)
        :param data_type: Data type (str): int8, uint8, int16, float16, float32
        :param data_format: 'nhwc' or 'nchw' (or a list, one per input); None means nhwc for 4-D inputs
        :param inputs_pass_through: pass_through flag (0 or 1) for every input (list)
        :param get_frame_id: also return the frame id (async mode)
        :param reuse_outputs: return views of reused buffers (overwritten by the next call)
        :return: Output data (ndarray list), None on failure
        """
        if self.rknn_runtime is None:
            self.rknn_log.e('Runtime environment is not inited, please call init_runtime to init it first!', False)
            return None

        try:
            self.rknn_runtime.set_inputs(inputs, data_type, data_format, inputs_pass_through=inputs_pass_through)
        except Exception:
            self.rknn_log.e('Catch exception when setting inputs.', False)
            self.rknn_log.e(traceback.format_exc(), False)
            return None

        try:
            ret = self.rknn_runtime.run(get_frame_id)
        except Exception:
            self.rknn_log.e('Catch exception when running RKNN model.', False)
            self.rknn_log.e(traceback.format_exc(), False)
            return None

        try:
            outputs = self.rknn_runtime.get_outputs(get_frame_id, reuse_outputs=reuse_outputs)
        except Exception:
            self.rknn_log.e('Catch exception when getting outputs.', False)
            self.rknn_log.e(traceback.format_exc(), False)
            return None

        if not get_frame_id:
            return outputs
        else:
            outputs.append(ret[1])
            return outputs

    def get_sdk_version(self):
        """
        Get SDK version
        :return: sdk_version (str), None on failure
        """
        if self.rknn_runtime is None:
            self.rknn_log.e('Runtime environment is not inited, please call init_runtime to init it first!', False)
            return None

        try:
            sdk_version, _, _ = self.rknn_runtime.get_sdk_version()
        except Exception:
            self.rknn_log.e('Catch exception when get sdk version', False)
            self.rknn_log.e(traceback.format_exc(), False)
            return None

        return sdk_version

    def release(self):
        """
        Release RKNN resource
        :return: None
        """
        if self.rknn_runtime is not None:
            self.rknn_runtime.release()
            self.rknn_runtime = None

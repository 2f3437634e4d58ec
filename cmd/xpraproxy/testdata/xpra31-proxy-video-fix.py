# Test-only fix for Debian's xpra 3.1.3 under Python 3: parse_proxy_video
# looks up "proxy.video.encodings" with a str key in a dict whose keys
# are bytes (AttributeError: 'NoneType' object has no attribute 'items'),
# and would then register bytes encodings and colourspaces. Same logic
# as xpra's, with the keys decoded.
def _patch():
    from xpra.server.source import encodings_mixin as em
    from xpra.util import typedict
    from xpra.os_util import bytestostr

    def parse_proxy_video(self):
        from xpra.codecs.enc_proxy.encoder import Encoder
        from xpra.codecs.codec_constants import video_spec
        pve = self.encoding_options.dictget("proxy.video.encodings") or {}
        em.proxylog("parse_proxy_video() proxy.video.encodings=%s", pve)
        for encoding, colorspace_specs in pve.items():
            encoding = bytestostr(encoding)
            for colorspace, spec_props in colorspace_specs.items():
                colorspace = bytestostr(colorspace)
                for spec_prop in spec_props:
                    spec_prop = typedict(spec_prop)
                    input_colorspace = spec_prop.strget("input_colorspace")
                    output_colorspaces = spec_prop.strlistget("output_colorspaces")
                    if not input_colorspace or not output_colorspaces:
                        continue
                    spec = video_spec(codec_class=Encoder, has_lossless_mode=spec_prop.boolget("has_lossless_mode", False),
                                      input_colorspace=input_colorspace, output_colorspaces=output_colorspaces,
                                      codec_type="proxy", encoding=encoding)
                    for k, v in spec_prop.items():
                        k = bytestostr(k)
                        if k.startswith("_") or not hasattr(spec, k) or k in ("input_colorspace", "output_colorspaces", "encoding", "codec_type"):
                            continue
                        setattr(spec, k, bytestostr(v) if isinstance(v, bytes) else v)
                    self.video_helper.add_encoder_spec(encoding, colorspace, spec)
    em.EncodingsMixin.parse_proxy_video = parse_proxy_video
try:
    _patch()
except Exception:
    pass

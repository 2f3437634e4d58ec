# A window that animates a colour grid for a few seconds, then stops on a
# fixed last frame: enough damage for xpra's video pipeline, then a still
# picture to compare.
import gi, math, sys, time
gi.require_version("Gtk", "3.0")
from gi.repository import Gtk, GLib
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 6
w = Gtk.Window(title="anim")
w.set_default_size(480, 320)
da = Gtk.DrawingArea()
w.add(da)
t0 = time.time()
def now():
    return min(time.time() - t0, SECONDS)
def draw(widget, cr):
    t = now()
    for i in range(24):
        for j in range(16):
            cr.set_source_rgb((math.sin(t*3+i*0.3)+1)/2, (math.cos(t*2+j*0.4)+1)/2, ((i*j+int(t*30))%17)/17.0)
            cr.rectangle(i*20, j*20, 20, 20)
            cr.fill()
def tick():
    da.queue_draw()
    return time.time() - t0 < SECONDS
GLib.timeout_add(33, tick)
da.connect("draw", draw)
w.connect("destroy", Gtk.main_quit)
w.show_all()
Gtk.main()

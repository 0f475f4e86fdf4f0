# SPDX-License-Identifier: Apache-2.0
'''BlueZ stand-in for the BLE tests: python-dbusmock's bluez5 template (org.bluez on the bus,
ObjectManager at /, Adapter1, Device1) plus GATT peripherals that run the mcugw device SDK.

Load it as a dbusmock template on a private bus:

    DBUS_SYSTEM_BUS_ADDRESS=unix:path=… python3 -m dbusmock --system \
        --template tests/integration/bluez_standin.py

and drive it through org.bluez.Mock on / (AddAdapter and AddDevice from bluez5, plus the
methods below). Each peripheral has one primary service with one characteristic
(MCUGW_BLE_SERVICE_UUID / MCUGW_BLE_CHARACTERISTIC_UUID of include/mcugw/wire.h) and a Unix
socket on which the stand-in listens; the test points `mcugw-sim run --connect unix:PATH` at it.
The accepted socket is the radio: while the peripheral is connected and notifications are on,
the sim's bytes leave as notifications of at most MTU - 3 bytes (PropertiesChanged on Value, or
packets on the AcquireNotify socket), and what the gateway writes (WriteValue type "command", or
packets on the AcquireWrite socket) goes to the sim. Disconnecting closes the sim's socket, like
a BLE link loss does to an MCU; the sim reconnects and waits in the backlog for the next
connection.

What BlueZ does and the stand-in does too: GATT objects are exported on connection before
ServicesResolved turns true and removed on disconnection; WriteValue is refused with
NotPermitted while the write side is acquired, and anything longer than one packet or not of
type "command" is refused (and counted, so that the test can assert it never happens);
AcquireWrite/AcquireNotify return a SOCK_SEQPACKET socket and the MTU, set WriteAcquired/
NotifyAcquired and release them when the gateway closes its end.
'''

import os
import socket

import dbus
import dbus.service
from gi.repository import GLib

from dbusmock import OBJECT_MANAGER_IFACE, mockobject
from dbusmock.templates import bluez5
# Re-exported so that dbusmock registers them on org.bluez.Mock of this template too.
from dbusmock.templates.bluez5 import (AddAdapter, AddDevice, RemoveAdapter,  # noqa: F401
                                       RemoveAdapterWithDevices)

BUS_NAME = 'org.bluez'
MAIN_OBJ = '/'
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

MOCK_IFACE = bluez5.BLUEZ_MOCK_IFACE
DEVICE_IFACE = bluez5.DEVICE_IFACE
SERVICE_IFACE = 'org.bluez.GattService1'
CHAR_IFACE = 'org.bluez.GattCharacteristic1'

SERVICE_UUID = '6e4d0001-8e5e-4c39-9a0e-6d6367770000'
CHAR_UUID = '6e4d0002-8e5e-4c39-9a0e-6d6367770000'

peripherals = {}  # address -> Peripheral


def _err(name, msg):
    return dbus.exceptions.DBusException(msg, name='org.bluez.Error.' + name)


class Peripheral:
    def __init__(self, mock, adapter, address, sock_path, acquire, mtu, flood):
        self.mock = mock
        self.address = address
        self.dev_path = bluez5.AddDevice(mock, adapter, address, 'mcugw-' + address[-5:])
        self.svc_path = self.dev_path + '/service0010'
        self.chr_path = self.svc_path + '/char0011'
        self.acquire = acquire
        self.mtu = mtu
        self.flood = flood
        self.connected = False
        self.notifying = False
        self.sim = None            # accepted socket of the sim (the "radio")
        self.sim_watch = None
        self.notify_sock = None    # our end of AcquireNotify
        self.write_sock = None     # our end of AcquireWrite
        self.write_watch = None
        self.flood_timer = None
        self.stats = {k: 0 for k in ('connects', 'disconnects', 'writes', 'write_bytes',
                                     'notifications', 'notify_bytes', 'oversize', 'bad_type',
                                     'acquire_write', 'acquire_notify', 'start_notify',
                                     'flood_packets', 'flood_dropped', 'write_value_locked')}
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(sock_path)
        self.listener.listen(4)
        self.listener.setblocking(False)
        dev = mockobject.objects[self.dev_path]
        dev.AddMethods(DEVICE_IFACE, [('Connect', '', '', self._connect_method()),
                                      ('Disconnect', '', '', self._disconnect_method())])

    # ---- Device1 ---------------------------------------------------------------------------

    def _connect_method(self):
        p = self

        def Connect(_dev):
            if p.connected:
                raise _err('AlreadyConnected', 'Already Connected')
            p.connect()
        return Connect

    def _disconnect_method(self):
        p = self

        def Disconnect(_dev):
            if not p.connected:
                raise _err('NotConnected', 'Not Connected')
            p.disconnect()
        return Disconnect

    def dev(self):
        return mockobject.objects[self.dev_path]

    def connect(self):
        self.connected = True
        self.stats['connects'] += 1
        self.dev().connected = True
        self.dev().UpdateProperties(DEVICE_IFACE, {'Connected': dbus.Boolean(True)})
        self._add_gatt()
        # Services resolve a little later, as over the air.
        GLib.timeout_add(30, self._resolved)

    def _resolved(self):
        if self.connected:
            self.dev().UpdateProperties(DEVICE_IFACE, {'ServicesResolved': dbus.Boolean(True)})
        return False

    def disconnect(self):
        if not self.connected:
            return
        self.connected = False
        self.stats['disconnects'] += 1
        self.dev().connected = False
        self._stop_radio()
        self._release_write()
        self._release_notify()
        self.notifying = False
        self.dev().UpdateProperties(DEVICE_IFACE, {'ServicesResolved': dbus.Boolean(False)})
        self._remove_gatt()
        self.dev().UpdateProperties(DEVICE_IFACE, {'Connected': dbus.Boolean(False)})

    # ---- GATT objects ----------------------------------------------------------------------

    def _add_gatt(self):
        mock = self.mock
        svc_props = {
            'UUID': dbus.String(SERVICE_UUID, variant_level=1),
            'Device': dbus.ObjectPath(self.dev_path, variant_level=1),
            'Primary': dbus.Boolean(True, variant_level=1),
            'Includes': dbus.Array([], signature='o', variant_level=1),
        }
        mock.AddObject(self.svc_path, SERVICE_IFACE, svc_props, [])
        chr_props = {
            'UUID': dbus.String(CHAR_UUID, variant_level=1),
            'Service': dbus.ObjectPath(self.svc_path, variant_level=1),
            'Value': dbus.Array([], signature='y', variant_level=1),
            'Notifying': dbus.Boolean(False, variant_level=1),
            'Flags': dbus.Array(['write-without-response', 'notify'], signature='s',
                                variant_level=1),
            'MTU': dbus.UInt16(self.mtu, variant_level=1),
        }
        # dbusmock calls plain functions (not bound methods) with the object first.
        methods = [
            ('ReadValue', 'a{sv}', 'ay', lambda obj, *a: self._m_read_value(obj, *a)),
            ('WriteValue', 'aya{sv}', '', lambda obj, *a: self._m_write_value(obj, *a)),
            ('StartNotify', '', '', lambda obj: self._m_start_notify(obj)),
            ('StopNotify', '', '', lambda obj: self._m_stop_notify(obj)),
        ]
        if self.acquire:
            chr_props['WriteAcquired'] = dbus.Boolean(False, variant_level=1)
            chr_props['NotifyAcquired'] = dbus.Boolean(False, variant_level=1)
            methods += [('AcquireWrite', 'a{sv}', 'hq',
                         lambda obj, *a: self._m_acquire_write(obj, *a)),
                        ('AcquireNotify', 'a{sv}', 'hq',
                         lambda obj, *a: self._m_acquire_notify(obj, *a))]
        mock.AddObject(self.chr_path, CHAR_IFACE, chr_props, methods)
        manager = mockobject.objects['/']
        manager.EmitSignal(OBJECT_MANAGER_IFACE, 'InterfacesAdded', 'oa{sa{sv}}',
                           [dbus.ObjectPath(self.svc_path), {SERVICE_IFACE: svc_props}])
        manager.EmitSignal(OBJECT_MANAGER_IFACE, 'InterfacesAdded', 'oa{sa{sv}}',
                           [dbus.ObjectPath(self.chr_path), {CHAR_IFACE: chr_props}])

    def _remove_gatt(self):
        manager = mockobject.objects['/']
        for path, iface in ((self.chr_path, CHAR_IFACE), (self.svc_path, SERVICE_IFACE)):
            if path in mockobject.objects:
                self.mock.RemoveObject(path)
                manager.EmitSignal(OBJECT_MANAGER_IFACE, 'InterfacesRemoved', 'oas',
                                   [dbus.ObjectPath(path), [iface]])

    def chr(self):
        return mockobject.objects.get(self.chr_path)

    # ---- GattCharacteristic1 ---------------------------------------------------------------

    def _m_read_value(self, _obj, _options):
        return dbus.Array([], signature='y')

    def _m_write_value(self, _obj, value, options):
        if self.write_sock is not None:
            self.stats['write_value_locked'] += 1
            raise _err('NotPermitted', 'Write acquired')
        if str(options.get('type', 'request')) != 'command':
            self.stats['bad_type'] += 1
            raise _err('NotSupported', 'only write-without-response is supported')
        if len(value) > self.mtu - 3:
            self.stats['oversize'] += 1
            raise _err('InvalidValueLength', 'longer than ATT_MTU - 3')
        self._to_sim(bytes(value))

    def _m_start_notify(self, _obj):
        if self.notify_sock is not None:
            raise _err('NotPermitted', 'Notify acquired')
        self.stats['start_notify'] += 1
        self.notifying = True
        self.chr().UpdateProperties(CHAR_IFACE, {'Notifying': dbus.Boolean(True)})
        self._start_radio()

    def _m_stop_notify(self, _obj):
        self.notifying = False
        self.chr().UpdateProperties(CHAR_IFACE, {'Notifying': dbus.Boolean(False)})

    def _m_acquire_write(self, _obj, _options):
        if self.write_sock is not None:
            raise _err('NotPermitted', 'Write already acquired')
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.write_sock = ours
        self.write_watch = GLib.io_add_watch(ours.fileno(), GLib.PRIORITY_DEFAULT,
                                             GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR,
                                             self._on_write_sock)
        self.stats['acquire_write'] += 1
        self.chr().UpdateProperties(CHAR_IFACE, {'WriteAcquired': dbus.Boolean(True)})
        fd = dbus.types.UnixFd(theirs.fileno())  # dbus-python keeps its own duplicate
        theirs.close()
        return (fd, dbus.UInt16(self.mtu - 3))

    def _m_acquire_notify(self, _obj, _options):
        if self.notify_sock is not None or self.notifying:
            raise _err('NotPermitted', 'Notify already acquired')
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.notify_sock = ours
        GLib.io_add_watch(ours.fileno(), GLib.PRIORITY_DEFAULT, GLib.IO_HUP | GLib.IO_ERR,
                          self._on_notify_hup)
        self.stats['acquire_notify'] += 1
        self.notifying = True
        self.chr().UpdateProperties(CHAR_IFACE, {'NotifyAcquired': dbus.Boolean(True),
                                                 'Notifying': dbus.Boolean(True)})
        fd = dbus.types.UnixFd(theirs.fileno())
        theirs.close()
        self._start_radio()
        return (fd, dbus.UInt16(self.mtu - 3))

    def _on_write_sock(self, fd, cond):
        if self.write_sock is None:
            return False
        try:
            while True:
                pkt = self.write_sock.recv(4096)
                if not pkt:
                    self._release_write()
                    return False
                if len(pkt) > self.mtu - 3:
                    self.stats['oversize'] += 1
                    continue
                self._to_sim(pkt)
        except BlockingIOError:
            pass
        except OSError:
            self._release_write()
            return False
        return True

    def _release_write(self):
        if self.write_sock is None:
            return
        if self.write_watch:
            GLib.source_remove(self.write_watch)
        self.write_watch = None
        self.write_sock.close()
        self.write_sock = None
        if self.chr():
            self.chr().UpdateProperties(CHAR_IFACE, {'WriteAcquired': dbus.Boolean(False)})

    def _on_notify_hup(self, fd, cond):
        self._release_notify()
        return False

    def _release_notify(self):
        if self.notify_sock is None:
            return
        self.notify_sock.close()
        self.notify_sock = None
        self.notifying = False
        if self.chr():
            self.chr().UpdateProperties(CHAR_IFACE, {'NotifyAcquired': dbus.Boolean(False),
                                                     'Notifying': dbus.Boolean(False)})

    # ---- the radio: the sim's socket ------------------------------------------------------

    def _start_radio(self):
        if self.flood:
            if self.flood_timer is None:
                self.flood_timer = GLib.timeout_add(10, self._flood_tick)
            return
        if self.sim is None:
            self._try_accept()

    def _try_accept(self):
        if not (self.connected and self.notifying) or self.sim is not None:
            return False
        try:
            s, _ = self.listener.accept()
        except BlockingIOError:
            # Nobody there yet: look again shortly (the sim reconnects once a second).
            GLib.timeout_add(100, self._try_accept)
            return False
        s.setblocking(False)
        self.sim = s
        self.sim_watch = GLib.io_add_watch(s.fileno(), GLib.PRIORITY_DEFAULT,
                                           GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR,
                                           self._on_sim)
        return False

    def _stop_radio(self):
        if self.flood_timer is not None:
            GLib.source_remove(self.flood_timer)
            self.flood_timer = None
        if self.sim is not None:
            GLib.source_remove(self.sim_watch)
            self.sim.close()
            self.sim = None

    def _on_sim(self, fd, cond):
        try:
            data = self.sim.recv(4096)
        except BlockingIOError:
            return True
        except OSError:
            data = b''
        if not data:
            # The MCU reset: over the air that is a disconnection by the peripheral.
            self.sim_watch = None
            self.sim.close()
            self.sim = None
            GLib.idle_add(self.disconnect)
            return False
        n = self.mtu - 3
        for i in range(0, len(data), n):
            self.notify(data[i:i + n])
        return True

    def notify(self, chunk):
        if not (self.connected and self.notifying):
            return False
        self.stats['notifications'] += 1
        self.stats['notify_bytes'] += len(chunk)
        if self.notify_sock is not None:
            try:
                self.notify_sock.send(chunk)
            except BlockingIOError:
                # BlueZ drops notifications the reader does not take.
                self.stats['flood_dropped'] += 1
                return False
            except OSError:
                return False
        else:
            self.chr().UpdateProperties(CHAR_IFACE, {'Value': dbus.Array(chunk, signature='y')})
        return True

    def _to_sim(self, data):
        self.stats['writes'] += 1
        self.stats['write_bytes'] += len(data)
        if self.sim is not None:
            try:
                self.sim.sendall(data)
            except OSError:
                pass

    def _flood_tick(self):
        # Garbage notifications (no frame delimiter), far above any sane rate.
        if not (self.connected and self.notifying):
            self.flood_timer = None
            return False
        chunk = bytes([0x55]) * (self.mtu - 3)
        for _ in range(40):
            if self.notify(chunk):
                self.stats['flood_packets'] += 1
        return True


@dbus.service.method(MOCK_IFACE, in_signature='sssa{sv}', out_signature='s')
def AddGattPeripheral(self, adapter, address, sock_path, options):
    '''Add a device with the mcugw GATT service, wired to the Unix socket sock_path.

    options: acquire (b, offer AcquireWrite/AcquireNotify, default true), mtu (q, ATT MTU,
    default 185), flood (b, send garbage notifications as fast as possible instead of the
    sim's bytes). Returns the device path.'''
    p = Peripheral(self, adapter, address, sock_path, bool(options.get('acquire', True)),
                   int(options.get('mtu', 185)), bool(options.get('flood', False)))
    peripherals[address] = p
    return p.dev_path


@dbus.service.method(MOCK_IFACE, in_signature='s', out_signature='a{sv}')
def PeripheralStats(self, address):
    p = peripherals[address]
    st = {k: dbus.Int64(v) for k, v in p.stats.items()}
    st['connected'] = dbus.Boolean(p.connected)
    st['notifying'] = dbus.Boolean(p.notifying)
    st['write_acquired'] = dbus.Boolean(p.write_sock is not None)
    st['notify_acquired'] = dbus.Boolean(p.notify_sock is not None)
    return st


@dbus.service.method(MOCK_IFACE, in_signature='s', out_signature='')
def DropConnection(self, address):
    '''The peripheral goes out of range: a disconnection not asked for by the gateway.'''
    peripherals[address].disconnect()


@dbus.service.method(MOCK_IFACE, in_signature='sn', out_signature='')
def SetRSSI(self, address, rssi):
    p = peripherals[address]
    p.dev().UpdateProperties(DEVICE_IFACE, {'RSSI': dbus.Int16(rssi)})


def load(mock, parameters):
    bluez5.load(mock, parameters)

# cpuu-fleet: preflight
<#
.SYNOPSIS
    Read-only look at a workstation before a wave touches it.
.DESCRIPTION
    Reports what the engine needs to decide whether and how to run CPUU here: who is logged on at
    the console (CPUU must run in that user's session), whether Outlook is open, free space on the
    system drive, which payload files are already staged (by SHA-256, so a push can skip them) and
    whether Cleanup already succeeded (then Undo must be refused). Changes nothing.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string]$Directory,

    [Parameter(Mandatory = $true)]
    [string]$StateDirectory
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

function Get-FileSha256 {
    # Streams the file through SHA-256: payload files can be large. Opened with ReadWrite sharing
    # so that a file another process still writes (a CPUU log) can be hashed too.
    param([Parameter(Mandatory = $true)][string]$Path)
    $stream = [System.IO.File]::Open($Path, [System.IO.FileMode]::Open,
        [System.IO.FileAccess]::Read, [System.IO.FileShare]::ReadWrite)
    try {
        $sha256 = [System.Security.Cryptography.SHA256]::Create()
        try {
            $hash = $sha256.ComputeHash($stream)
        }
        finally {
            $sha256.Dispose()
        }
    }
    finally {
        $stream.Dispose()
    }
    return ([System.BitConverter]::ToString($hash) -replace '-', '').ToLowerInvariant()
}

$os = Get-CimInstance -ClassName Win32_OperatingSystem
$systemDrive = $env:SystemDrive
$disk = Get-CimInstance -ClassName Win32_LogicalDisk -Filter "DeviceID='$systemDrive'"
$computer = Get-CimInstance -ClassName Win32_ComputerSystem

# Win32_ComputerSystem.UserName is the user of the console session, empty when nobody is logged on.
$loggedOnUser = $null
if (-not [string]::IsNullOrEmpty($computer.UserName)) {
    $loggedOnUser = [string]$computer.UserName
}

$outlookRunning = $null -ne (Get-Process -Name 'OUTLOOK' -ErrorAction SilentlyContinue)

# HKCR\Outlook.Application\CurVer's default value is e.g. "Outlook.Application.16": report "16.0".
# GetValue('') reads the default value without tripping strict mode when it is absent.
$outlookVersion = $null
$curVerKey = Get-Item -LiteralPath 'Registry::HKEY_CLASSES_ROOT\Outlook.Application\CurVer' -ErrorAction SilentlyContinue
if ($null -ne $curVerKey) {
    $progId = [string]$curVerKey.GetValue('')
    if ($progId -match '\.(\d+)$') {
        $outlookVersion = '{0}.0' -f $Matches[1]
    }
}

$stagedFiles = @{}
if (Test-Path -LiteralPath $Directory -PathType Container) {
    $root = (Get-Item -LiteralPath $Directory -Force).FullName.TrimEnd('\') + '\'
    foreach ($file in Get-ChildItem -LiteralPath $Directory -File -Recurse -Force) {
        $relative = $file.FullName.Substring($root.Length)
        $stagedFiles[$relative] = Get-FileSha256 -Path $file.FullName
    }
}

$cleanupDone = $null
$marker = Join-Path -Path $StateDirectory -ChildPath 'cleanup-done.json'
if (Test-Path -LiteralPath $marker -PathType Leaf) {
    $cleanupDone = [System.IO.File]::ReadAllText($marker)
}

@{
    ComputerName   = $env:COMPUTERNAME
    OSCaption      = [string]$os.Caption
    OSVersion      = [string]$os.Version
    FreeBytes      = [int64]$disk.FreeSpace
    LoggedOnUser   = $loggedOnUser
    OutlookRunning = [bool]$outlookRunning
    OutlookVersion = $outlookVersion
    StagedFiles    = $stagedFiles
    CleanupDone    = $cleanupDone
}

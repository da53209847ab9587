# cpuu-fleet: preflight
<#
.SYNOPSIS
    Read-only look at a workstation before a wave touches it.
.DESCRIPTION
    Reports what the engine needs to decide whether and how to run CPUU here: the session's
    language mode (checked first: under AppLocker/WDAC script enforcement PowerShell runs in
    ConstrainedLanguage, where the .NET calls of every cpuu-fleet script fail, so preflight stops
    with the error id ConstrainedLanguage before trying any), who is logged on at the console
    (CPUU must run in a user's session) and every user with an interactive session (RDP
    included), whether Outlook is open, free space on the system
    drive, which of the files the engine asks about (-Paths, relative to -Directory) are already
    staged (by SHA-256, so a push can skip them; a file another process holds open exclusively is
    listed in Locked instead of failing the step) and whether Cleanup already succeeded (then Undo
    must be refused). Only -Paths are hashed: whatever else lies in the folder is none of
    preflight's business. Changes nothing.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string]$Directory,

    [Parameter(Mandatory = $true)]
    [string]$StateDirectory,

    [string[]]$Paths
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

# Reading this property is allowed in ConstrainedLanguage (about_Language_Modes: "You can find the
# language mode of a FullLanguage or ConstrainedLanguage session by getting the value of the
# LanguageMode property of the session state"); Write-Error is a cmdlet, so it works there too,
# where $PSCmdlet.ThrowTerminatingError (a method call) would not.
$languageMode = [string]$ExecutionContext.SessionState.LanguageMode
if ($languageMode -ne 'FullLanguage') {
    Write-Error -Message ("PowerShell on {0} runs in {1} mode (AppLocker/WDAC script enforcement): the cpuu-fleet scripts need FullLanguage." -f $env:COMPUTERNAME, $languageMode) `
        -ErrorId 'ConstrainedLanguage' -Category PermissionDenied -TargetObject $languageMode -ErrorAction Stop
}

function Test-Locked {
    # ERROR_SHARING_VIOLATION (32) and ERROR_LOCK_VIOLATION (33): another process holds the file
    # without sharing read access (a CPUU log, an AV scan). .NET method errors arrive wrapped in a
    # MethodInvocationException, hence the walk down InnerException.
    param([System.Exception]$Exception)
    while ($null -ne $Exception) {
        if ($Exception -is [System.IO.IOException]) {
            $code = $Exception.HResult -band 0xFFFF
            if ($code -eq 32 -or $code -eq 33) {
                return $true
            }
        }
        $Exception = $Exception.InnerException
    }
    return $false
}

function Get-DisconnectedSessionIds {
    # The ids of the disconnected sessions among -Sessions (@{ <user key>; SessionId } each),
    # read from quser: @{ <id> = $true }; $null when quser.exe is not there (Home editions), and
    # every session then counts as connected. quser's header and state words are localized, so
    # they are not read. Relied on instead (assumption, docs/remote-scripts.md "Sessions"): each
    # line is one marker character ('>' for the caller's own session), the user's SAM name (cut
    # to 20 characters), the session's name, its id; session names are WinStation names
    # (console, rdp-tcp#N), not localized, and a disconnected session has none, so its id
    # follows the user's name directly.
    param([object[]]$Sessions, [string]$UserKey)
    $quser = "$env:SystemRoot\System32\quser.exe"
    if (-not (Test-Path -LiteralPath $quser -PathType Leaf)) {
        return $null
    }
    $ErrorActionPreference = 'Continue'
    $lines = @(& "$env:SystemRoot\System32\quser.exe" 2>$null)
    $ErrorActionPreference = 'Stop'
    $found = @{}
    foreach ($session in @($Sessions)) {
        $name = @(([string]$session[$UserKey]) -split '\\')[-1]
        if ($name.Length -gt 20) {
            $name = $name.Substring(0, 20)
        }
        $pattern = '^.' + [regex]::Escape($name) + '\s+' + [int]$session['SessionId'] + '(\s|$)'
        foreach ($line in $lines) {
            if ([string]$line -match $pattern) {
                $found[[int]$session['SessionId']] = $true
            }
        }
    }
    return $found
}

function Get-FileSha256 {
    # Streams the file through SHA-256: payload files can be large. Opened with ReadWrite and
    # Delete sharing so that a file another process still writes can be hashed too. Returns $null
    # when another process holds the file exclusively: that file is reported as locked.
    param([Parameter(Mandatory = $true)][string]$Path)
    try {
        $stream = [System.IO.File]::Open($Path, [System.IO.FileMode]::Open,
            [System.IO.FileAccess]::Read, ([System.IO.FileShare]::ReadWrite -bor [System.IO.FileShare]::Delete))
    }
    catch {
        if (Test-Locked -Exception $_.Exception) {
            return $null
        }
        throw
    }
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

$os = Get-CimInstance -ClassName Win32_OperatingSystem -ErrorAction Stop
$systemDrive = $env:SystemDrive
$disk = Get-CimInstance -ClassName Win32_LogicalDisk -Filter "DeviceID='$systemDrive'" -ErrorAction Stop
$computer = Get-CimInstance -ClassName Win32_ComputerSystem -ErrorAction Stop

# Win32_ComputerSystem.UserName is the user of the console session, empty when nobody is logged on.
$loggedOnUser = $null
if (-not [string]::IsNullOrEmpty($computer.UserName)) {
    $loggedOnUser = [string]$computer.UserName
}

# Every user with an interactive shell, in any session (Win32_ComputerSystem.UserName names the
# console's user only): the owners of explorer.exe, each user once. The kind comes from the logon
# session the shell belongs to (association Win32_SessionProcess to Win32_LogonSession, whose
# LogonType is 2 or 11 at the console, 10 or 12 over RDP), with its StartTime as the logon time.
# Not seen: a session without explorer.exe (still starting, a custom shell). Whether a session is
# disconnected is not in WMI: quser knows (Get-DisconnectedSessionIds; the WTS API would need
# Add-Type). State: 'active', 'disconnected', or $null when quser could not be run.
$sessions = @()
$seenSids = @{}
$shells = @(Get-CimInstance -ClassName Win32_Process -Filter "Name='explorer.exe'" -ErrorAction Stop |
    Sort-Object -Property SessionId)
foreach ($shell in $shells) {
    $owner = Invoke-CimMethod -InputObject $shell -MethodName GetOwner -ErrorAction SilentlyContinue
    $ownerSid = Invoke-CimMethod -InputObject $shell -MethodName GetOwnerSid -ErrorAction SilentlyContinue
    if ($null -eq $owner -or [int]$owner.ReturnValue -ne 0 -or $null -eq $ownerSid -or [int]$ownerSid.ReturnValue -ne 0) {
        continue
    }
    $sid = [string]$ownerSid.Sid
    if ($seenSids.ContainsKey($sid)) {
        continue
    }
    $seenSids[$sid] = $true
    $kind = 'unknown'
    $logonTime = $null
    $logons = @(Get-CimAssociatedInstance -InputObject $shell -Association Win32_SessionProcess -ErrorAction SilentlyContinue)
    if ($logons.Count -gt 0) {
        $logonType = [int]$logons[0].LogonType
        if ($logonType -eq 2 -or $logonType -eq 11) {
            $kind = 'console'
        }
        elseif ($logonType -eq 10 -or $logonType -eq 12) {
            $kind = 'rdp'
        }
        if ($null -ne $logons[0].StartTime) {
            $logonTime = $logons[0].StartTime.ToUniversalTime().ToString('o')
        }
    }
    $sessions += @{
        User      = ([string]$owner.Domain + '\' + [string]$owner.User)
        Sid       = $sid
        SessionId = [int]$shell.SessionId
        Kind      = $kind
        LogonTime = $logonTime
    }
}

$disconnected = Get-DisconnectedSessionIds -Sessions $sessions -UserKey 'User'
foreach ($session in $sessions) {
    $session['State'] = $null
    if ($null -ne $disconnected) {
        $session['State'] = 'active'
        if ($disconnected.ContainsKey([int]$session['SessionId'])) {
            $session['State'] = 'disconnected'
        }
    }
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
$locked = @()
if (Test-Path -LiteralPath $Directory -PathType Container) {
    foreach ($relative in @($Paths)) {
        if ([string]::IsNullOrEmpty($relative)) {
            continue
        }
        $path = Join-Path -Path $Directory -ChildPath $relative -ErrorAction Stop
        if (-not (Test-Path -LiteralPath $path -PathType Leaf)) {
            continue
        }
        $hash = Get-FileSha256 -Path $path
        if ($null -eq $hash) {
            $locked += $relative
        }
        else {
            $stagedFiles[$relative] = $hash
        }
    }
}

$cleanupDone = $null
$marker = Join-Path -Path $StateDirectory -ChildPath 'cleanup-done.json' -ErrorAction Stop
if (Test-Path -LiteralPath $marker -PathType Leaf) {
    $cleanupDone = [System.IO.File]::ReadAllText($marker)
}

@{
    ComputerName   = $env:COMPUTERNAME
    OSCaption      = [string]$os.Caption
    OSVersion      = [string]$os.Version
    FreeBytes      = [int64]$disk.FreeSpace
    LoggedOnUser   = $loggedOnUser
    Sessions       = $sessions
    OutlookRunning = [bool]$outlookRunning
    OutlookVersion = $outlookVersion
    StagedFiles    = $stagedFiles
    Locked         = [string[]]$locked
    LanguageMode   = $languageMode
    CleanupDone    = $cleanupDone
}
